package scenario

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Marshal writes s as scenario YAML that Parse reads back to the same
// values: zero fields are left out, sizes are written with a K/M/G suffix
// when they have one (hex otherwise), durations as Go durations. The
// fuzzer writes its reproducers with it.
func Marshal(s *Scenario) ([]byte, error) {
	n, err := encodeNode(reflect.ValueOf(s).Elem())
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// encodeNode returns v's node, or nil when v is its zero value.
func encodeNode(v reflect.Value) (*yaml.Node, error) {
	scalar := func(tag, s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: s} }
	switch v.Type() {
	case stepType:
		return encodeStep(v.Addr().Interface().(*Step))
	case sizeType:
		if v.Uint() == 0 {
			return nil, nil
		}
		return scalar("!!str", formatSize(v.Uint())), nil
	case durationType:
		if v.Int() == 0 {
			return nil, nil
		}
		return scalar("!!str", time.Duration(v.Int()).String()), nil
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil, nil
		}
		n, err := encodeNode(v.Elem())
		if n == nil && err == nil {
			// A set pointer to a zero value (write: false, upfront: 0)
			// means something: write the zero.
			n = zeroNode(v.Elem())
		}
		return n, err
	case reflect.Struct:
		m := &yaml.Node{Kind: yaml.MappingNode}
		for _, f := range yamlFields(v.Type()) {
			if !f.IsExported() {
				continue
			}
			c, err := encodeNode(v.FieldByIndex(f.Index))
			if err != nil {
				return nil, err
			}
			if c != nil {
				m.Content = append(m.Content, scalar("!!str", yamlName(f)), c)
			}
		}
		if len(m.Content) == 0 {
			return nil, nil
		}
		return m, nil
	case reflect.Slice:
		if v.Len() == 0 {
			return nil, nil
		}
		seq := &yaml.Node{Kind: yaml.SequenceNode}
		for i := range v.Len() {
			c, err := encodeNode(v.Index(i))
			if err != nil {
				return nil, err
			}
			if c == nil {
				c = &yaml.Node{Kind: yaml.MappingNode}
			}
			seq.Content = append(seq.Content, c)
		}
		return seq, nil
	case reflect.Map:
		if v.Len() == 0 {
			return nil, nil
		}
		m := &yaml.Node{Kind: yaml.MappingNode}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		for _, k := range keys {
			c, err := encodeNode(v.MapIndex(k))
			if err != nil {
				return nil, err
			}
			if c == nil {
				c = zeroNode(v.MapIndex(k))
			}
			m.Content = append(m.Content, scalar("!!str", k.String()), c)
		}
		return m, nil
	case reflect.String:
		if v.String() == "" {
			return nil, nil
		}
		return scalar("!!str", v.String()), nil
	case reflect.Bool:
		if !v.Bool() {
			return nil, nil
		}
		return scalar("!!bool", "true"), nil
	case reflect.Int, reflect.Int64, reflect.Int32:
		if v.Int() == 0 {
			return nil, nil
		}
		return scalar("!!int", strconv.FormatInt(v.Int(), 10)), nil
	case reflect.Uint, reflect.Uint64, reflect.Uint32:
		if v.Uint() == 0 {
			return nil, nil
		}
		return scalar("!!int", strconv.FormatUint(v.Uint(), 10)), nil
	case reflect.Float64:
		if v.Float() == 0 {
			return nil, nil
		}
		return scalar("!!float", strconv.FormatFloat(v.Float(), 'g', -1, 64)), nil
	}
	return nil, fmt.Errorf("scenario: cannot write a %s", v.Type())
}

// zeroNode is the explicit zero of v's type.
func zeroNode(v reflect.Value) *yaml.Node {
	switch {
	case v.Type() == sizeType || v.Type() == durationType:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: "0"}
	case v.Kind() == reflect.Bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "false"}
	case v.Kind() == reflect.String:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: ""}
	case v.Kind() == reflect.Struct, v.Kind() == reflect.Map:
		return &yaml.Node{Kind: yaml.MappingNode}
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: "0"}
}

// formatSize writes n with the largest K/M/G/T suffix that divides it.
func formatSize(n uint64) string {
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return strconv.FormatUint(n>>u.shift, 10) + u.suffix
		}
	}
	return "0x" + strconv.FormatUint(n, 16)
}
