package scenario

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"

	"github.com/tdxsim/tdxsim/internal/jsonschema"
)

// SizePattern is what a size string looks like: decimal or 0x hex, with
// an optional K/M/G/T suffix.
const SizePattern = `^(0[xX][0-9a-fA-F]+|[0-9]+)[kKmMgGtT]?$`

// Schema returns the JSON Schema (draft 2020-12) of scenario files,
// generated from the Go types that Load decodes into: the same keys, the
// same doc strings, enums and bounds, and no other keys allowed.
func Schema() ([]byte, error) {
	g := schemaGen{defs: map[string]any{}}
	s := g.structSchema(reflect.TypeOf(Scenario{}))
	s["$defs"] = g.defs
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["$id"] = "https://github.com/tdxsim/tdxsim/scenario.schema.json"
	s["title"] = "tdxsim scenario"
	return json.MarshalIndent(s, "", "  ")
}

var (
	sizeType     = reflect.TypeOf(Size(0))
	durationType = reflect.TypeOf(Duration(0))
)

// schemaGen puts every struct type but the root in $defs (the timeline's
// parallel steps make Step recursive) and refers to it by $ref.
type schemaGen struct{ defs map[string]any }

func (g *schemaGen) schemaOf(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case sizeType:
		return map[string]any{"oneOf": []any{
			map[string]any{"type": "integer", "minimum": 0},
			map[string]any{"type": "string", "pattern": SizePattern},
		}}
	case durationType:
		return map[string]any{"type": "string", "pattern": `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`}
	}
	switch t.Kind() {
	case reflect.Struct:
		if _, ok := g.defs[t.Name()]; !ok {
			g.defs[t.Name()] = nil // placeholder: a recursive use refers to it
			if t == stepType {
				g.defs[t.Name()] = g.stepSchema()
			} else {
				g.defs[t.Name()] = g.structSchema(t)
			}
		}
		return map[string]any{"$ref": "#/$defs/" + t.Name()}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": g.schemaOf(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schemaOf(t.Elem())}
	}
	if s := jsonschema.Scalar(t.Kind()); s != nil {
		return s
	}
	return map[string]any{}
}

// structSchema is the object schema of a struct type: its yaml keys, doc
// tags as descriptions, enum/min/max/required tags, no other keys.
func (g *schemaGen) structSchema(t reflect.Type) map[string]any {
	{
		props := map[string]any{}
		var required []string
		for _, f := range yamlFields(t) {
			name := yamlName(f)
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			p := g.schemaOf(f.Type)
			if d := f.Tag.Get("doc"); d != "" {
				p["description"] = d
			}
			if e := f.Tag.Get("enum"); e != "" {
				p["enum"] = strings.Split(e, ",")
			}
			for _, b := range []string{"min", "max"} {
				if v := f.Tag.Get(b); v != "" {
					n, _ := strconv.Atoi(v)
					p[map[string]string{"min": "minimum", "max": "maximum"}[b]] = n
				}
			}
			if f.Tag.Get("required") == "true" {
				required = append(required, name)
			}
			props[name] = p
		}
		s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		if len(required) > 0 {
			s["required"] = required
		}
		return s
	}
}
