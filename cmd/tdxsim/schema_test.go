package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// validate checks v against the part of JSON Schema report.Schema uses:
// $ref into $defs, type (one or a list), properties, required,
// additionalProperties (false or a schema), items, minimum. It returns
// every mismatch with its JSON path.
func validate(root, s map[string]any, v any, path string) []string {
	if ref, ok := s["$ref"].(string); ok {
		def := root["$defs"].(map[string]any)[strings.TrimPrefix(ref, "#/$defs/")]
		return validate(root, def.(map[string]any), v, path)
	}
	var errs []string
	if t, ok := s["type"]; ok {
		var types []string
		switch t := t.(type) {
		case string:
			types = []string{t}
		case []any:
			for _, x := range t {
				types = append(types, x.(string))
			}
		}
		if !slices.Contains(types, jsonType(v)) && !(jsonType(v) == "integer" && slices.Contains(types, "number")) {
			return []string{fmt.Sprintf("%s: %s, want %v", path, jsonType(v), types)}
		}
	}
	if m, ok := s["minimum"].(float64); ok {
		if n, isNum := v.(float64); isNum && n < m {
			errs = append(errs, fmt.Sprintf("%s: %v < minimum %v", path, n, m))
		}
	}
	switch v := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		for _, r := range asList(s["required"]) {
			if _, ok := v[r]; !ok {
				errs = append(errs, fmt.Sprintf("%s: required key %q missing", path, r))
			}
		}
		for k, x := range v {
			if p, ok := props[k]; ok {
				errs = append(errs, validate(root, p.(map[string]any), x, path+"."+k)...)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					errs = append(errs, fmt.Sprintf("%s: key %q not in the schema", path, k))
				}
			case map[string]any:
				errs = append(errs, validate(root, ap, x, path+"."+k)...)
			}
		}
	case []any:
		if items, ok := s["items"].(map[string]any); ok {
			for i, x := range v {
				errs = append(errs, validate(root, items, x, fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	}
	return errs
}

func asList(v any) (out []string) {
	l, _ := v.([]any)
	for _, x := range l {
		out = append(out, x.(string))
	}
	return out
}

func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case float64:
		if v == math.Trunc(v) {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "unknown"
}

// schema --report is checked against real reports: a plain run, one with
// huge pages, fault injection and a hostile guest (the optional keys), and
// one that stopped with an error; and the validator refuses a report with
// a key removed, a key added, or a wrong type.
func TestReportSchema(t *testing.T) {
	code, out, errs := run("schema", "--report")
	var schema map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &schema) != nil {
		t.Fatalf("schema --report: exit %d: %s", code, errs)
	}
	reports := map[string]string{}
	file := writeScenario(t, small4K)
	for name, args := range map[string][]string{
		"plain":   {"run", "--json", file},
		"hostile": {"run", "--json", "../../examples/hostile-inject.yaml"},
		"stopped": {"run", "--json", "--policy", "hugepages=2M", file}, // punch_hole of 1 MiB in 2 MiB folios: EINVAL
		"replay":  {"replay", "--json", file},
		// the kernel's responses to injected faults (kernel_responses,
		// teardown.leaked_on_purpose, a guest_memfd window's reused)
		"responses": {"run", "--json", writeScenario(t, responsesScenario)},
	} {
		if testing.Short() && name == "hostile" {
			continue
		}
		_, out, _ := run(args...)
		reports[name] = out
	}
	for name, out := range reports {
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("%s: not one JSON document: %v\n%.300s", name, err, out)
		}
		if es := validate(schema, schema, v, "$"); len(es) > 0 {
			t.Errorf("%s: %s", name, strings.Join(es, "\n"))
		}
	}
	if !strings.Contains(reports["responses"], `"kernel_responses":`) || !strings.Contains(reports["responses"], `"reused":`) {
		t.Errorf("the run with injected faults has no kernel responses: %.300s", reports["responses"])
	}
	if !strings.Contains(reports["stopped"], `"error":`) {
		t.Errorf("the stopped run has no error: %.300s", reports["stopped"])
	}
	var v map[string]any
	json.Unmarshal([]byte(reports["plain"]), &v)
	v["surprise"] = 1
	delete(v, "seed")
	v["mrtd"] = 7.0
	es := strings.Join(validate(schema, schema, v, "$"), "\n")
	for _, want := range []string{`key "surprise" not in the schema`, `required key "seed" missing`, "$.mrtd: integer, want [string]"} {
		if !strings.Contains(es, want) {
			t.Errorf("validator missed %q: %s", want, es)
		}
	}
}

// responsesScenario injects a failed RECLAIM (a page leaked on purpose)
// and a failed REMOVE (KVM_BUG_ON; the punched hole then frees pages the
// dead TD still maps).
const responsesScenario = `
inject: {fail: [{leaf: TDH.PHYMEM.PAGE.RECLAIM, nth: 1}, {leaf: TDH.MEM.PAGE.REMOVE, nth: 3}]}
tds: [{name: a, memory: 64M, vcpus: 2}]
timeline:
  - boot: {td: a, accept: lazy, upfront: 8M}
  - convert: {td: a, count: 4, size: 16K}
  - punch_hole: {td: a, gpa: 0, size: 1M}
`

// With --json, stdout is one JSON document and nothing else, for every
// command that has --json (bench's is checked by TestBench).
func TestPureJSON(t *testing.T) {
	file := writeScenario(t, small4K)
	for _, args := range [][]string{
		{"run", file, "--json"},
		{"replay", file, "--json"},
		{"compare", file, "--policy", "dynamic_pamt=false", "--json"},
		{"fuzz", "--runs", "2", "--out", "", "--json"},
		{"kernels", "--json"},
		{"explore", "../../examples/explore-lazy-accept.yaml", "--preemptions", "1", "--out", "", "--json"},
		{"fuzz", "merge", "--json", writeShardSummary(t)},
		{"run", "--costs", "--json"},
		{"mrtd", "--layout", "../../examples/mrtd/layout.yaml", "--json"},
	} {
		code, out, errs := run(args...)
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil || code != 0 {
			t.Errorf("%v: exit %d, %v: stdout %.200q, stderr %.200q", args, code, err, out, errs)
		}
	}
}

// writeShardSummary writes one small campaign's --json summary and
// returns its path, for fuzz merge.
func writeShardSummary(t *testing.T) string {
	t.Helper()
	code, out, errs := run("fuzz", "--runs", "1", "--schedules", "1", "--out", "", "--json")
	if code != 0 {
		t.Fatalf("fuzz: exit %d: %s", code, errs)
	}
	path := filepath.Join(t.TempDir(), "shard.json")
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
