// Package jsonschema holds what the scenario-file schema (tdxsim schema)
// and the report schema (tdxsim schema --report) generate alike from Go
// types: the schema of a scalar kind.
package jsonschema

import "reflect"

// Scalar returns the JSON Schema of a value of kind k: a string, a
// boolean, an integer (unsigned ones with minimum 0) or a number; nil for
// a kind that is not a scalar (struct, slice, map, pointer, ...), which
// each generator describes itself.
func Scalar(k reflect.Kind) map[string]any {
	switch k {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64, reflect.Int32:
		return map[string]any{"type": "integer"}
	case reflect.Uint, reflect.Uint64, reflect.Uint32:
		return map[string]any{"type": "integer", "minimum": 0}
	case reflect.Float64:
		return map[string]any{"type": "number"}
	}
	return nil
}
