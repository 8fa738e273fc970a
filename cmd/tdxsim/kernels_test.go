package main

import (
	"bytes"
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/kernel"
)

// `kernels --json` is one JSON document: an array of objects with exactly
// the keys name, base, series, merged, sources, differences, one per
// profile in the registry's order.
func TestKernelsJSON(t *testing.T) {
	code, out, errs := run("kernels", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	var list []map[string]json.RawMessage
	if err := dec.Decode(&list); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if dec.More() {
		t.Fatal("more than one JSON document")
	}
	names := kernel.Names()
	if len(list) != len(names) || len(list) < 5 {
		t.Fatalf("%d profiles, want %d (at least 5)", len(list), len(names))
	}
	want := "base differences merged name series sources"
	for i, obj := range list {
		var keys []string
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if got := strings.Join(keys, " "); got != want {
			t.Errorf("profile %d keys %q, want %q", i, got, want)
		}
		var p struct {
			Name        string            `json:"name"`
			Base        string            `json:"base"`
			Merged      *bool             `json:"merged"`
			Series      []json.RawMessage `json:"series"`
			Sources     []json.RawMessage `json:"sources"`
			Differences []struct {
				Setting     string `json:"setting"`
				Kind        string `json:"kind"`
				Implemented *bool  `json:"implemented"`
			} `json:"differences"`
		}
		raw, _ := json.Marshal(obj)
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		if p.Name != names[i] || p.Base == "" || p.Merged == nil {
			t.Errorf("profile %d: name %q (want %q), base %q, merged %v", i, p.Name, names[i], p.Base, p.Merged)
		}
		if len(p.Series) == 0 || len(p.Sources) == 0 || len(p.Differences) == 0 {
			t.Errorf("%s: %d series, %d sources, %d differences: want each non-empty", p.Name, len(p.Series), len(p.Sources), len(p.Differences))
		}
		for _, d := range p.Differences {
			if !strings.Contains(d.Setting, "=") || (d.Kind != "policy" && d.Kind != "behaviour") || d.Implemented == nil {
				t.Errorf("%s: difference %+v", p.Name, d)
			}
		}
	}
}

func TestKernelsText(t *testing.T) {
	code, out, errs := run("kernels", "6.19", "dpamt-v6")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"6.19 (merged; base v6.19)", "dpamt-v6 (not merged", "hugepages=off", "pamt_refcount_array=max_pfn", "not modelled yet:", "sources:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "rfc-v5 (") {
		t.Error("a profile that was not asked for is listed")
	}
}

func TestKernelsBadInput(t *testing.T) {
	for _, args := range [][]string{{"kernels", "--colour"}, {"kernels", "6.20"}} {
		code, _, errs := run(args...)
		if code != exitBadInput {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitBadInput, errs)
		}
	}
	if code, _, errs := run("kernels", "6.20"); !strings.Contains(errs, "7.0") {
		t.Errorf("exit %d: unknown-name error does not list the profiles: %s", code, errs)
	}
	var out, errb bytes.Buffer
	if code := Main([]string{"kernels", "--help"}, &out, &errb); code != exitOK {
		t.Errorf("--help: exit %d", code)
	}
}

// A small TD whose guest converts and punches, with no policies of its
// own: the profile's policies decide the mapping size and PAMT.
const profileScenario = `
tds:
  - {memory: 512M, vcpus: 2}
timeline:
  - boot: {accept: lazy, upfront: 8M}
  - convert: {count: 2, size: 1M, placement: sequential}
  - punch_hole: {gpa: 64M, size: 2M}
`

// runProfile runs profileScenario with the profile's policies as --policy
// overrides (what --kernel will do) and returns the SEAMCALL counts and the
// peak private mappings by level.
func runProfile(t *testing.T, file, name string) (map[string]uint64, map[string]int64) {
	t.Helper()
	p, err := kernel.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "--json"}
	for _, pair := range p.PolicyPairs() {
		args = append(args, "--policy", pair)
	}
	code, out, errs := run(append(args, file)...)
	if code != 0 {
		t.Fatalf("%s: exit %d: %s", name, code, errs)
	}
	var r struct {
		Seamcalls    map[string]uint64 `json:"seamcalls"`
		MappingsPeak map[string]int64  `json:"mappings_peak"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	return r.Seamcalls, r.MappingsPeak
}

// A merged profile's policies give what a merged kernel does: no DEMOTE, no
// PAMT.ADD and no 2 MiB private mapping; the huge-page profile, on the same
// file, does map at 2 MiB (so the check is not vacuous).
func TestMergedProfilesNoHugePagesNoDPAMT(t *testing.T) {
	file := writeScenario(t, profileScenario)
	for _, p := range kernel.All() {
		if !p.Merged {
			continue
		}
		calls, peak := runProfile(t, file, p.Name)
		for _, leaf := range []string{"TDH.MEM.PAGE.DEMOTE", "TDH.PHYMEM.PAMT.ADD"} {
			if calls[leaf] != 0 {
				t.Errorf("%s: %d %s", p.Name, calls[leaf], leaf)
			}
		}
		if peak["2M"] != 0 || peak["1G"] != 0 {
			t.Errorf("%s: huge private mappings %v", p.Name, peak)
		}
	}
	calls, peak := runProfile(t, file, "hugepage-v3+dpamt-v4")
	if peak["2M"] == 0 || calls["TDH.PHYMEM.PAMT.ADD"] == 0 {
		t.Errorf("hugepage-v3+dpamt-v4: peak %v, PAMT.ADD %d: want 2 MiB mappings and Dynamic PAMT", peak, calls["TDH.PHYMEM.PAMT.ADD"])
	}
}
