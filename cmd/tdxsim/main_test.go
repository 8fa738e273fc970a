package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeScenario(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "s.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A 1 GiB TD at 4K: 4 MiB accepted at boot, 1 MiB converted and back,
// 1 MiB punched by the VMM.
const small4K = `
policies: {hugepages: "off"}
tds:
  - {memory: 1G, vcpus: 2, image: [{gpa: 0x3FE00000, size: 2M, measure: true}]}
timeline:
  - boot: {accept: lazy, upfront: 4M}
  - convert: {count: 1, size: 1M, placement: sequential}
  - punch_hole: {gpa: 1M, size: 1M}
`

func TestRunScenarioJSON(t *testing.T) {
	file := writeScenario(t, small4K)
	code, out, errs := run("run", "--json", file)
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errs, out)
	}
	var r struct {
		Seamcalls    map[string]uint64 `json:"seamcalls"`
		MRTD         string            `json:"mrtd"`
		Mappings     map[string]int64  `json:"mappings"`
		MappingsPeak map[string]int64  `json:"mappings_peak"`
		Memory       struct {
			PAMT  uint64            `json:"pamt_bytes"`
			SEPT  int               `json:"sept_pages"`
			Charg map[string]uint64 `json:"charged_bytes"`
		} `json:"memory"`
		Conversions struct {
			ToShared int64 `json:"to_shared"`
		} `json:"conversions"`
		Splits    map[string]int64  `json:"splits"`
		ModeledNS map[string]uint64 `json:"modeled_ns"`
		Teardown  struct {
			Leaked    int64 `json:"leaked_pages"`
			Reclaimed int64 `json:"sept_pages_reclaimed"`
		} `json:"teardown"`
		Violations []string `json:"violations"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	// 1024 pages accepted, 256 of them converted and accepted again; the
	// 512-page image and every AUGed page are removed once.
	if r.Seamcalls["TDH.MEM.PAGE.AUG"] != 1024+256 || r.Seamcalls["TDH.MEM.PAGE.REMOVE"] != 512+1024+256 ||
		r.MappingsPeak["4K"] != 512+1024 || r.Mappings["4K"] != 512+1024-256 || len(r.MRTD) != 96 ||
		r.Teardown.Leaked != 0 || r.Teardown.Reclaimed == 0 || r.Violations == nil || len(r.Violations) != 0 {
		t.Fatalf("report %+v", r)
	}
	if r.Memory.PAMT == 0 || r.Memory.SEPT == 0 || r.Memory.Charg["td0"] == 0 || r.Conversions.ToShared == 0 ||
		r.ModeledNS["build"] == 0 || r.ModeledNS["boot"] == 0 || r.ModeledNS["total"] == 0 || r.Splits == nil {
		t.Fatalf("report %+v", r)
	}
	// Same seed, same report, byte for byte.
	_, out2, _ := run("run", "--json", file)
	if out != out2 {
		t.Fatal("two runs with the same seed differ")
	}
}

// With huge pages (the default), the guest accepts 2M first: untouched
// 2 MiB ranges stay 2M, the converted 4K-aligned ones are split.
func TestRunHugePagesJSON(t *testing.T) {
	file := writeScenario(t, `
tds: [{memory: 1G, image: [{gpa: 0x3FE00000, size: 2M, measure: true}]}]
timeline:
  - boot: {upfront: 8M}
  - convert: {count: 1, size: 4K, placement: sequential}
`)
	code, out, errs := run("run", "--json", file)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r struct {
		Seamcalls map[string]uint64 `json:"seamcalls"`
		Mappings  map[string]int64  `json:"mappings_peak"`
		Splits    map[string]int64  `json:"splits"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	// 8 MiB = four 2M accepts; converting the first 4K splits one of them.
	if r.Mappings["2M"] != 4 || r.Splits["2M"] != 1 || r.Seamcalls["TDH.MEM.PAGE.DEMOTE"] != 1 {
		t.Fatalf("report %+v", r)
	}
	// --policy hugepages=off: no 2M mapping, no split.
	code, out, _ = run("run", "--json", "--policy", "hugepages=off", file)
	if err := json.Unmarshal([]byte(out), &r); code != 0 || err != nil || r.Mappings["2M"] != 0 || r.Splits["2M"] != 0 {
		t.Fatalf("hugepages=off: exit %d, %+v", code, r)
	}
}

func TestRunDefaultText(t *testing.T) {
	code, out, errs := run("run")
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errs, out)
	}
	for _, want := range []string{"default: kernel hugepage-v3+dpamt-v4, seed 1", "td0: 4.00 GiB, 2 vCPUs", "SEAMCALLs by leaf", "TDH.MEM.PAGE.AUG",
		"Private mappings", "PAMT static", "charged to td0", "MRTD td0 ", "violations: none"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if errs != "" {
		t.Errorf("stderr is not a terminal, yet got %q", errs)
	}
}

func TestSchema(t *testing.T) {
	code, out, _ := run("schema")
	var s map[string]any
	if err := json.Unmarshal([]byte(out), &s); code != 0 || err != nil || s["properties"] == nil {
		t.Fatalf("exit %d, %v", code, err)
	}
}

func TestCosts(t *testing.T) {
	code, out, _ := run("run", "--costs")
	if code != 0 || !strings.Contains(out, "TDH.MEM.PAGE.AUG") || !strings.Contains(out, "Dstack") {
		t.Fatalf("exit %d: %s", code, out)
	}
}

func TestBadInputExits2(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("regions:\n  - {gpa: 0x10, size: 4K}\n"), 0o644)
	badScenario := writeScenario(t, "tds:\n  - {memory: 3M}\n")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"run", "--policy", "hugepages=4M"}, `--policy: policies.hugepages: "4M": must be one of [2M off 1G]`},
		{[]string{"run", "--policy", "colour=blue"}, "unknown policy"},
		{[]string{"run", "--policy", "novalue"}, "want key=value"},
		{[]string{"run", badScenario}, "s.yaml:2: tds[0].memory: 0x300000 is not a multiple of 2M"},
		{[]string{"run", filepath.Join(dir, "none.yaml")}, "no such file"},
		{[]string{"run", "a.yaml", "b.yaml"}, "at most one scenario file"},
		{[]string{"schema", "x"}, "takes no arguments"},
		{[]string{"bench", "x"}, "takes no arguments"},
		{[]string{"run", "--inject", "busy=2"}, "--inject: inject.busy: 2: want a probability from 0 to 1"},
		{[]string{"run", "--inject", "fail=TDH.NOPE:1"}, `unknown SEAMCALL leaf "TDH.NOPE"`},
		{[]string{"run", "--inject", "fail=TDH.MEM.TRACK:x"}, "N is not a number"},
		{[]string{"run", "--inject", "colour=blue"}, "unknown; known: busy, busy_leaves, fail, alloc"},
		{[]string{"fuzz", "--inject", "busy=-1"}, "want a probability"},
		{[]string{"serve", "--policy", "hugepages=off", "a.yaml", "b.yaml"}, "at most two scenario files"},
		{[]string{"serve", filepath.Join(dir, "none.yaml")}, "no such file"},
		{[]string{"run", "--trace", "x.json", "--trace-format", "pprof"}, `--trace-format "pprof": want chrome or ftrace`},
		{[]string{"replay", "--trace-format", "pprof", "x.yaml"}, `--trace-format "pprof"`},
		{[]string{"bench", "--scale=maybe"}, "invalid boolean value"},
		{[]string{"mrtd"}, "--layout FILE is required"},
		{[]string{"mrtd", "--layout", bad}, "bad.yaml:2: regions[0].gpa: 0x10 is not 4 KiB aligned"},
		{[]string{"mrtd", "--layout", filepath.Join(dir, "none.yaml")}, "no such file"},
	} {
		code, _, errs := run(c.args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errs, c.want)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"mrtd", "-h"}, {"schema", "-h"}} {
		code, out, errs := run(args...)
		if code != 0 || !strings.Contains(out+errs, "usage: tdxsim") {
			t.Errorf("%v: exit %d", args, code)
		}
	}
}

func TestMRTDExample(t *testing.T) {
	code, out, errs := run("mrtd", "--layout", "../../examples/mrtd/layout.yaml", "--json")
	if code != 0 || !strings.HasPrefix(out, `{"mrtd": "`) || len(strings.TrimSpace(out)) != len(`{"mrtd": ""}`)+96 {
		t.Fatalf("exit %d out %q err %q", code, out, errs)
	}
}

// --parallel runs the same scenario on real goroutines: the checks pass and
// the MRTD (built before any vCPU runs) is the seeded run's.
func TestRunParallel(t *testing.T) {
	file := writeScenario(t, small4K)
	var reports [2]struct {
		MRTD       string   `json:"mrtd"`
		Violations []string `json:"violations"`
	}
	for i, args := range [][]string{{"run", "--json", file}, {"run", "--json", "--parallel", file}} {
		code, out, errs := run(args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s\n%s", args, code, errs, out)
		}
		if err := json.Unmarshal([]byte(out), &reports[i]); err != nil {
			t.Fatal(err)
		}
	}
	if reports[1].MRTD == "" || reports[1].MRTD != reports[0].MRTD || len(reports[1].Violations) != 0 {
		t.Fatalf("parallel run: mrtd %q (seeded %q), violations %v", reports[1].MRTD, reports[0].MRTD, reports[1].Violations)
	}
}

// fuzz with a hazard's policy finds it, writes a shrunk reproducer, exits
// 1; replay reproduces it step by step; with upstream policies a short
// campaign exits 0.
func TestFuzzReplay(t *testing.T) {
	out := t.TempDir()
	code, stdout, errs := run("fuzz", "--runs", "3", "--policy", "zap_private_on_notifier=true", "--out", out, "--json", "--trace")
	if code != 1 {
		t.Fatalf("exit %d: %s\n%s", code, errs, stdout)
	}
	var sum struct {
		Runs        int            `json:"runs"`
		Steps       int            `json:"steps"`
		Violations  map[string]int `json:"violations"`
		Reproducers []string       `json:"reproducers"`
		Traces      []string       `json:"traces"`
	}
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Runs != 3 || sum.Steps == 0 || sum.Violations["guest_reads_back"] == 0 || len(sum.Reproducers) == 0 || len(sum.Traces) != len(sum.Reproducers) {
		t.Fatalf("summary %+v", sum)
	}
	var tr struct {
		TraceEvents []map[string]any `json:"traceEvents"`
	}
	if b, err := os.ReadFile(sum.Traces[0]); err != nil || json.Unmarshal(b, &tr) != nil || len(tr.TraceEvents) == 0 {
		t.Fatalf("trace %s: %v", sum.Traces[0], err)
	}
	code, stdout, errs = run("replay", sum.Reproducers[0])
	if code != 1 || !strings.Contains(stdout, "guest_reads_back at timeline[") {
		t.Fatalf("replay exit %d: %s\n%s", code, errs, stdout)
	}
	if code, stdout, errs := run("fuzz", "--runs", "2", "--out", ""); code != 0 || !strings.Contains(stdout, "violations: none") {
		t.Fatalf("default campaign exit %d: %s\n%s", code, errs, stdout)
	}
	for _, bad := range [][]string{{"fuzz", "--shard", "3/2"}, {"fuzz", "--policy", "split_order=sideways"}, {"replay"}, {"compare", "a.yaml"}} {
		if code, _, errs := run(bad...); code != 2 || errs == "" {
			t.Errorf("%v: exit %d, stderr %q", bad, code, errs)
		}
	}
}

func TestCompare(t *testing.T) {
	file := writeScenario(t, small4K)
	code, out, errs := run("compare", "--json", "--policy", "dynamic_pamt=false", file)
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errs, out)
	}
	if !decodeCompare(t, out).differ()["seamcalls TDH.PHYMEM.PAMT.ADD"] {
		t.Fatalf("static PAMT run shows no PAMT.ADD difference: %s", out)
	}
}

// FuzzFlags feeds every command's flag parser arbitrary arguments (go
// test -fuzz=FuzzFlags ./cmd/tdxsim). Each command gets an ending that
// keeps it from doing work whatever the fuzzed flags say: a scenario file
// that does not exist, or a last flag out of its range (the last of a
// repeated flag wins). So each call ends in the flag parser, a range
// check or the loader, with exit 0 (help) or 2 and a message, never a
// panic. The flag types of fuzz (--shard, --policy) are fuzzed directly
// too.
func FuzzFlags(f *testing.F) {
	for _, s := range []string{"--seed 3", "--policy hugepages=1G", "--json --parallel", "--shard 1/4",
		"--trace x --trace-format ftrace", "--svg", "--policy =", "--seed=-1", "-h", "--inject busy=0.5",
		"--strategy pct --depth 0", "--kernel 6.19 --kernel 7.0", "--max-memory 3M", "--workers 0", "--faults all", "merge", "--"} {
		f.Add(uint8(0), s)
	}
	missing := filepath.Join(f.TempDir(), "missing.yaml")
	// Each command: what comes before the fuzzed arguments and what comes
	// after them ("--" first where a fuzzed flag that wants a value must
	// not take the file: with no file, run would run the default).
	cmds := []struct{ before, after []string }{
		{[]string{"run"}, []string{"--", missing}},
		{[]string{"replay"}, []string{"--", missing}},
		{[]string{"compare"}, []string{"--", missing}},
		{[]string{"serve"}, []string{"--", missing}},
		{[]string{"explore"}, []string{"--preemptions", "99", missing}},
		{[]string{"fuzz"}, []string{"--runs", "0"}},
		{[]string{"fuzz", "merge"}, []string{"--", missing}},
		{[]string{"bench"}, []string{"--rounds", "0"}},
		{[]string{"mrtd", "--layout", missing}, nil},
		{[]string{"schema"}, nil},
		{[]string{"kernels"}, nil},
	}
	f.Fuzz(func(t *testing.T, which uint8, line string) {
		var sh shardFlag
		_ = sh.Set(line)
		var p policyFlag
		_ = p.Set(line)
		c := cmds[int(which)%len(cmds)]
		args := append(append(append([]string{}, c.before...), strings.Fields(line)...), c.after...)
		code, _, errs := run(args...)
		if code != 0 && code != 2 {
			t.Fatalf("%q: exit %d (want 0 or 2): %s", args, code, errs)
		}
		if code == 2 && strings.TrimSpace(errs) == "" {
			t.Fatalf("%q: exit 2 without a message", args)
		}
	})
}

// run --svg writes the SVG and --trace the trace, in both formats.
func TestRunSVGAndTrace(t *testing.T) {
	file := writeScenario(t, small4K)
	dir := t.TempDir()
	svg, js, ft := filepath.Join(dir, "m.svg"), filepath.Join(dir, "t.json"), filepath.Join(dir, "t.ftrace")
	if code, _, errs := run("run", "--svg", svg, "--trace", js, file); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if code, _, errs := run("run", "--trace", ft, "--trace-format", "ftrace", file); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	b, _ := os.ReadFile(svg)
	if !strings.HasPrefix(string(b), "<?xml") || !strings.Contains(string(b), "<svg") || !strings.Contains(string(b), "td0: GPA 0 to") {
		t.Errorf("SVG: %.200s", b)
	}
	var tr struct {
		TraceEvents []map[string]any `json:"traceEvents"`
	}
	if b, _ := os.ReadFile(js); json.Unmarshal(b, &tr) != nil || len(tr.TraceEvents) < 100 {
		t.Errorf("Chrome trace: %d events", len(tr.TraceEvents))
	}
	if b, _ := os.ReadFile(ft); !strings.Contains(string(b), ": kvm_page_fault: ") || !strings.Contains(string(b), ": tdx_seamcall: leaf TDH.MEM.PAGE.AUG") {
		t.Errorf("ftrace: %.300s", b)
	}
}

// compareJSON is what the tests read of compare --json.
type compareJSON struct {
	NameA string `json:"a"`
	NameB string `json:"b"`
	Diffs []struct {
		Metric string `json:"metric"`
		Differ bool   `json:"differ"`
	} `json:"diffs"`
}

func decodeCompare(t *testing.T, out string) compareJSON {
	t.Helper()
	var c compareJSON
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// differ maps each metric to whether it differs.
func (c compareJSON) differ() map[string]bool {
	m := map[string]bool{}
	for _, d := range c.Diffs {
		m[d.Metric] = d.Differ
	}
	return m
}
