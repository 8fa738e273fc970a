package mrtd

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tdxsim/tdxsim/internal/yamlin"
)

// decodeLayout decodes a layout's node tree strictly, in the scenario
// loader's error form (file:line: field: rule, no Go type names): every
// key known and given once, every value of its field's kind.
func decodeLayout(path string, root *yaml.Node) (Layout, error) {
	var l Layout
	fail := func(n *yaml.Node, field, format string, args ...any) error {
		return &InputError{File: path, Line: n.Line, Field: field, Rule: fmt.Sprintf(format, args...)}
	}
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return l, fail(n, "", "want a mapping with a `regions:` list, got a %s", yamlin.KindName(n.Kind))
	}
	if err := dupKeys(path, n, ""); err != nil {
		return l, err
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value != "regions" {
			return l, fail(k, k.Value, "unknown key; known keys here: regions")
		}
		if v.Kind == yaml.AliasNode || (v.Kind != yaml.SequenceNode && v.Tag != "!!null") {
			return l, fail(v, "regions", "want a list of regions, got a %s", yamlin.KindName(v.Kind))
		}
		for j, rn := range v.Content {
			field := "regions[" + strconv.Itoa(j) + "]"
			if rn.Kind != yaml.MappingNode {
				return l, fail(rn, field, "want a mapping of file, fill, gpa, measure, size, got a %s", yamlin.KindName(rn.Kind))
			}
			if err := dupKeys(path, rn, field); err != nil {
				return l, err
			}
			r := Region{line: rn.Line}
			for m := 0; m+1 < len(rn.Content); m += 2 {
				rk, rv := rn.Content[m], rn.Content[m+1]
				sub := field + "." + rk.Value
				if rv.Kind != yaml.ScalarNode {
					return l, fail(rv, sub, "want a value, got a %s", yamlin.KindName(rv.Kind))
				}
				switch rk.Value {
				case "gpa", "size":
					var s Size
					if err := s.UnmarshalYAML(rv); err != nil {
						return l, fail(rv, sub, "%v", err)
					}
					if rk.Value == "gpa" {
						r.GPA = &s
					} else {
						r.Size = &s
					}
				case "file":
					r.File = rv.Value
				case "fill":
					b, err := strconv.ParseInt(strings.TrimSpace(rv.Value), 0, 64)
					if err != nil {
						return l, fail(rv, sub, "want an integer (a byte, 0 to 255), got %q", rv.Value)
					}
					f := int(b)
					r.Fill = &f
				case "measure":
					var b bool
					if err := rv.Decode(&b); err != nil {
						return l, fail(rv, sub, "want true or false, got %q", rv.Value)
					}
					r.Measure = b
				default:
					return l, fail(rk, sub, "unknown key; known keys here: file, fill, gpa, measure, size")
				}
			}
			l.Regions = append(l.Regions, r)
		}
	}
	return l, nil
}

func dupKeys(path string, n *yaml.Node, field string) error {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if first, ok := seen[k.Value]; ok {
			f := k.Value
			if field != "" {
				f = field + "." + k.Value
			}
			return &InputError{File: path, Line: k.Line, Field: f, Rule: fmt.Sprintf("duplicate key (first at line %d): a key may appear once in a mapping", first)}
		}
		seen[k.Value] = k.Line
	}
	return nil
}
