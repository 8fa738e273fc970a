package scenario

// The format's two scalar types beside YAML's own: sizes and durations,
// each with its decoder.

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tdxsim/tdxsim/internal/yamlin"
)

// Size is a byte count or address: an integer, or a string in decimal,
// 0x hex, or with a K/M/G/T suffix (powers of 1024).
type Size = yamlin.Size

// Duration is a Go duration string (10ms, 1.5s).
type Duration time.Duration

// UnmarshalYAML parses a duration.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a duration (10ms), got a %s", yamlin.KindName(n.Kind))
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		return fmt.Errorf("%q is not a duration (10ms, 1.5s)", n.Value)
	}
	if v < 0 {
		return fmt.Errorf("%q is negative", n.Value)
	}
	*d = Duration(v)
	return nil
}
