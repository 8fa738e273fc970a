package report

import (
	"encoding/json"
	"reflect"
	"strings"

	"github.com/tdxsim/tdxsim/internal/jsonschema"
)

// Schema returns the JSON Schema (draft 2020-12) of the run report,
// `tdxsim run --json` (and replay's), generated from Run's Go type: every
// key, required unless it is omitted when empty, and no other keys. A
// list or map may be null (Go's nil). What each key counts is in
// docs/glossary.md.
func Schema() ([]byte, error) {
	g := reportSchema{defs: map[string]any{}}
	s := g.object(reflect.TypeOf(Run{}))
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["$id"] = "https://github.com/tdxsim/tdxsim/report.schema.json"
	s["title"] = "tdxsim run report"
	s["description"] = "The report of tdxsim run --json; each key is explained in docs/glossary.md. New keys may be added; existing ones keep their meaning."
	s["$defs"] = g.defs
	return json.MarshalIndent(s, "", "  ")
}

type reportSchema struct{ defs map[string]any }

func (g *reportSchema) of(t reflect.Type) map[string]any {
	switch t.Kind() {
	case reflect.Pointer:
		return g.of(t.Elem())
	case reflect.Struct:
		if _, ok := g.defs[t.Name()]; !ok {
			g.defs[t.Name()] = nil
			g.defs[t.Name()] = g.object(t)
		}
		return map[string]any{"$ref": "#/$defs/" + t.Name()}
	case reflect.Slice:
		return map[string]any{"type": []string{"array", "null"}, "items": g.of(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": []string{"object", "null"}, "additionalProperties": g.of(t.Elem())}
	}
	if s := jsonschema.Scalar(t.Kind()); s != nil {
		return s
	}
	return map[string]any{}
}

// object is a struct's schema: its json keys, those without omitempty
// required, no others.
func (g *reportSchema) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	required := []string{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = g.of(f.Type)
		if !strings.Contains(opts, "omitempty") {
			required = append(required, name)
		}
	}
	return map[string]any{"type": "object", "properties": props, "required": required, "additionalProperties": false}
}
