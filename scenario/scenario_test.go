package scenario

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Each bad scenario names the file, the line, the field and the rule.
func TestBadInput(t *testing.T) {
	const td = "tds:\n  - {memory: 64M}\n"
	for _, c := range []struct {
		rule, text, want string
	}{
		{"empty file", "", "s.yaml: empty scenario"},
		{"YAML syntax", "tds: [\n", "s.yaml:1: YAML syntax:"},
		{"two documents", td + "---\n" + td, "s.yaml:3: more than one YAML document"},
		{"unknown key", "tds:\n  - memry: 64M\n", "s.yaml:2: tds[0].memry: unknown key; known keys here: conversion, firmware, gmem_offset, image,"},
		{"unknown top-level key", "hots: {}\n" + td, "s.yaml:1: hots: unknown key"},
		{"wrong type: integer", "tds:\n  - {memory: 64M, vcpus: two}\n", `s.yaml:2: tds[0].vcpus: want an integer, got "two"`},
		{"wrong type: mapping", "host: 5\n" + td, "s.yaml:1: host: want a mapping of max_pfn, memory, packages, tdx, got a value"},
		{"wrong type: list", "tds: {memory: 64M}\n", "s.yaml:1: tds: want a list, got a mapping"},
		{"wrong type: bool", "policies: {dynamic_pamt: maybe}\n" + td, `s.yaml:1: policies.dynamic_pamt: want true or false, got "maybe"`},
		{"wrong type: string", "name: {a: 1}\n" + td, "s.yaml:1: name: want a string, got a mapping"},
		{"bad size", "tds:\n  - {memory: lots}\n", `s.yaml:2: tds[0].memory: size "lots": not a decimal`},
		{"size not aligned", "tds:\n  - {memory: 3M}\n", "s.yaml:2: tds[0].memory: 0x300000 is not a multiple of 2M"},
		{"memory missing", "tds:\n  - {vcpus: 2}\n", "s.yaml:2: tds[0].memory: required (or give memslots)"},
		{"no TDs", "name: x\n", "s.yaml: tds: at least one TD is required"},
		{"vcpus range", "tds:\n  - {memory: 64M, vcpus: 300}\n", "tds[0].vcpus: 300: must be 1..256"},
		{"duplicate TD name", "tds:\n  - {name: a, memory: 64M}\n  - {name: a, memory: 64M}\n", `s.yaml:3: tds[1].name: "a" is already the name of tds[0]`},
		{"bad TD name", "tds:\n  - {name: 'a b', memory: 64M}\n", `tds[0].name: "a b": 1 to 32 letters`},
		{"TDs exceed host", "host: {memory: 4G}\ntds:\n  - {memory: 4G}\n", "s.yaml:3: tds: the TDs' memory (4.00 GiB) must fit in half of host.memory"},
		{"host memory unaligned", "host: {memory: 5M}\n" + td, "s.yaml:1: host.memory: 0x500000 is not a multiple of 2M"},
		{"packages range", "host: {packages: 0}\n" + td, "host.packages: 0: must be 1..64"},
		{"memslot unaligned", "tds:\n  - memslots: [{gpa: 1M, size: 2M}]\n", "s.yaml:2: tds[0].memslots[0].gpa: 0x100000 is not 2M aligned"},
		{"memslots overlap", "tds:\n  - memslots: [{gpa: 0, size: 4M}, {gpa: 2M, size: 2M}]\n", "tds[0].memslots[1]: [0x200000, 0x400000) overlaps memslots[0]"},
		{"memslots vs memory", "tds:\n  - memory: 8M\n    memslots: [{gpa: 0, size: 4M}]\n", "s.yaml:2: tds[0].memory: 8.00 MiB, but the memslots add up to 4.00 MiB"},
		{"memslot past shared bit", "tds:\n  - memslots: [{gpa: 0x7FFFFFE00000, size: 4M}]\n", "reaches the shared bit"},
		{"image outside memslots", "tds:\n  - memory: 64M\n    image: [{gpa: 64M, size: 4K}]\n", "s.yaml:3: tds[0].image[0]: [0x4000000, 0x4001000) is not inside one memslot of td0"},
		{"image overlap", "tds:\n  - memory: 64M\n    image: [{gpa: 0, size: 8K}, {gpa: 4K, size: 4K}]\n", "tds[0].image[1]: overlaps image[0]"},
		{"image unaligned", "tds:\n  - memory: 64M\n    image: [{gpa: 0x10, size: 4K}]\n", "tds[0].image[0].gpa: 0x10 is not 4K aligned"},
		{"image file missing", "tds:\n  - memory: 64M\n    image: [{gpa: 0, file: nope.bin}]\n", "tds[0].image[0].file: open"},
		{"image without content", "tds:\n  - memory: 64M\n    image: [{gpa: 0}]\n", "tds[0].image[0]: needs size or file"},
		{"fill out of range", "tds:\n  - memory: 64M\n    image: [{gpa: 0, size: 4K, fill: 300}]\n", "tds[0].image[0].fill: 300 is not a byte"},
		{"enum", "policies: {hugepages: 4M}\n" + td, `s.yaml:1: policies.hugepages: "4M": must be one of [2M off 1G]`},
		{"gmem offset vs punches", "tds:\n  - {memory: 64M, gmem_offset: 4K}\n", "tds[0].gmem_offset: 0x1000 is not a whole number of huge pages"},
		{"cost leaf name", "host: {tdx: {costs: {AUG: 5}}}\n" + td, `host.tdx.costs: "AUG": not a SEAMCALL`},
		{"cost zero", "host: {tdx: {costs: {TDH.MEM.PAGE.AUG: 0}}}\n" + td, "host.tdx.costs.TDH.MEM.PAGE.AUG: a latency must be positive"},
		{"TD required", "tds:\n  - {memory: 64M}\n  - {memory: 64M}\ntimeline:\n  - boot: {}\n", "timeline[0].boot.td: required: the scenario has 2 TDs"},
		{"range in deleted slot", "tds:\n  - memslots: [{gpa: 0, size: 4M}, {gpa: 8M, size: 4M}]\ntimeline:\n  - memslot_delete: {slot: 1}\n  - punch_hole: {gpa: 8M, size: 4K}\n", "timeline[1].punch_hole: [0x800000, 0x801000) is not inside one live memslot"},
		{"expect mrtd hex", td + "expect: {mrtd: {td0: abc}}\n", "s.yaml:3: expect.mrtd.td0: want 96 hex digits"},
		{"expect mrtd TD", td + "expect: {mrtd: {td9: abc}}\n", `expect.mrtd.td9: no TD is named "td9"`},
		{"expect seamcall leaf", td + "expect: {seamcalls: {AUG: {max: 1}}}\n", "expect.seamcalls.AUG: not a SEAMCALL leaf name"},
		{"expect bounds", td + "expect: {seamcalls: {total: {min: 5, max: 1}}}\n", "expect.seamcalls.total: min 5 is above max 1"},
		{"expect empty bound", td + "expect: {seamcalls: {total: {}}}\n", "expect.seamcalls.total: give min, max or both"},
	} {
		t.Run(c.rule, func(t *testing.T) { refused(t, c.text, c.want) })
	}
}

// Each bad step of a one-TD scenario's timeline names the line, the
// step's field and the rule.
func TestBadStep(t *testing.T) {
	for _, c := range []struct {
		rule, steps, want string
	}{
		{"step with no kind", "{expect_error: EIO}", "s.yaml:4: timeline[0]: a step has exactly one of"},
		{"step with two kinds", "{idle: {time: 1ms}, teardown: {}}", "(found 2)"},
		{"unknown TD", "boot: {td: nope}", `s.yaml:4: timeline[0].boot.td: no TD is named "nope"`},
		{"after teardown", "teardown: {}\n  - touch: {}", "s.yaml:5: timeline[1].touch.td: td0 was torn down at timeline[0].teardown"},
		{"boot twice", "boot: {}\n  - boot: {}", "timeline[1].boot: td0 already booted at timeline[0].boot"},
		{"upfront too big", "boot: {upfront: 128M}", "timeline[0].boot.upfront: 0x8000000 must be a 4K multiple no larger than the TD's RAM"},
		{"upfront with eager", "boot: {accept: eager, upfront: 4M}", "timeline[0].boot.upfront: goes with accept: lazy"},
		{"touch outside RAM", "touch: {start: 60M, size: 8M}", "timeline[0].touch: [start 0x3c00000, +0x800000) is not inside the TD's RAM"},
		{"zipf skew", "touch: {pattern: zipf, skew: 0.5}", "timeline[0].touch.skew: 0.5: zipf needs s > 1"},
		{"convert count", "convert: {count: 0}", "timeline[0].convert.count: 0: need at least one range"},
		{"convert too much", "convert: {count: 20, size: 2M}", "timeline[0].convert: 20 ranges of 2.00 MiB from 0x0 do not fit"},
		{"convert unaligned", "convert: {count: 1, size: 5K}", "timeline[0].convert.size: 0x1400 is not a multiple of 4K"},
		{"balloon unaligned", "balloon: {size: 1M}", "timeline[0].balloon.size: 0x100000 must be a non-zero multiple of 2M"},
		{"idle duration", "idle: {time: soon}", `s.yaml:4: timeline[0].idle.time: "soon" is not a duration`},
		{"host range unaligned", "punch_hole: {gpa: 0x10, size: 4K}", "timeline[0].punch_hole: gpa 0x10 and size 0x1000 must be 4K multiples"},
		{"host range outside", "mmu_notifier: {gpa: 62M, size: 4M}", "timeline[0].mmu_notifier: [0x3e00000, 0x4200000) is not inside one live memslot"},
		{"slot index", "memslot_delete: {slot: 3}", "timeline[0].memslot_delete.slot: 3: td0 has memslots 0..0"},
		{"slot deleted twice", "memslot_delete: {slot: 0}\n  - memslot_delete: {slot: 0}", "memslot 0 was deleted at timeline[0].memslot_delete"},
		{"memory failure outside", "memory_failure: {gpa: 64M}", "timeline[0].memory_failure.gpa: 0x4000000 must be a 4K aligned GPA in a live memslot"},
		{"parallel nesting", "parallel: [{parallel: [{idle: {time: 1ms}}, {idle: {time: 1ms}}]}, {idle: {time: 1ms}}]", "timeline[0].parallel[0].parallel: parallel steps do not nest"},
		{"teardown in parallel", "parallel: [{teardown: {}}, {idle: {time: 1ms}}]", "timeline[0].parallel[0].teardown: teardown cannot run in parallel"},
		{"two workloads of one TD in parallel", "parallel: [{touch: {count: 1}}, {convert: {count: 1}}]", "timeline[0].parallel[1]: a second guest workload of TD \"td0\" beside timeline[0].parallel[0]"},
	} {
		t.Run(c.rule, func(t *testing.T) { refused(t, "tds:\n  - {memory: 64M}\ntimeline:\n  - "+c.steps+"\n", c.want) })
	}
}

// refused parses text as s.yaml: it must be refused with an *InputError
// on one line containing want.
func refused(t *testing.T, text, want string) {
	t.Helper()
	_, err := Parse(filepath.Join(t.TempDir(), "s.yaml"), []byte(text))
	if err == nil {
		t.Fatalf("accepted; want %q", want)
	}
	var ie *InputError
	msg := err.Error()
	if !errAs(err, &ie) || !strings.Contains(msg, want) || strings.Contains(msg, "\n") {
		t.Fatalf("got %q\nwant an *InputError on one line containing %q", msg, want)
	}
}

func errAs(err error, ie **InputError) bool {
	e, ok := err.(*InputError)
	*ie = e
	return ok
}

// Every example loads, runs, and passes its checks and expectations.
func TestExamples(t *testing.T) {
	long := func(name string) string {
		if testing.Short() && strings.Contains(name, "eager-vs-lazy") {
			return "8 GiB eager boot: long"
		}
		return ""
	}
	eachExample(t, long, func(t *testing.T, f *File) {
		r := runClean(t, f, Options{})
		if len(r.Expectations) == 0 && len(f.Expect.MRTD)+len(f.Expect.Seamcalls) > 0 {
			t.Fatal("expectations not evaluated")
		}
	})
}

// On the parallel scheduler (real goroutines) every example runs clean too:
// the interleaving is the machine's, so counts may differ from the seeded
// run, but no check may fail. Under -race this is the test that the model
// is safe on goroutines.
func TestParallel(t *testing.T) {
	small := func(name string) string {
		if testing.Short() && !slices.Contains([]string{"balloon.yaml", "convert-splits.yaml", "host-events.yaml", "in-place.yaml", "two-tds.yaml"}, name) {
			return "short: the small examples only"
		}
		return ""
	}
	eachExample(t, small, func(t *testing.T, f *File) { runClean(t, f, Options{Parallel: true}) })
}

// examples/default.yaml documents the embedded default: they are the same.
func TestDefaultIsExample(t *testing.T) {
	b, err := os.ReadFile("../examples/default.yaml")
	if err != nil || !bytes.Equal(b, DefaultYAML()) {
		t.Fatal("examples/default.yaml differs from scenario/default.yaml")
	}
}

// The same seed gives the same report, byte for byte; another seed a
// different interleaving (scheduler steps) but the same checks passing.
func TestDeterministic(t *testing.T) {
	text := `
tds: [{memory: 256M, vcpus: 3}]
timeline:
  - boot: {upfront: 32M}
  - touch: {pattern: random, count: 2000}
  - convert: {count: 40, size: 8K}
`
	run := func(seed uint64) []byte {
		f, err := Parse("d.yaml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		r, err := Run(f, Options{Seed: &seed})
		if err != nil || r.Failed() {
			t.Fatalf("seed %d: %v %v", seed, err, r.Violations)
		}
		var b bytes.Buffer
		r.WriteJSON(&b)
		return b.Bytes()
	}
	a, b, c := run(7), run(7), run(8)
	if !bytes.Equal(a, b) {
		t.Fatal("same seed, different reports")
	}
	if bytes.Equal(a, c) {
		t.Fatal("seeds 7 and 8 gave identical reports")
	}
}

// poisonedTouch is a timeline whose third step touches a page a
// hardware error poisoned (it fails with EHWPOISON); a test goes on
// from the touch step.
const poisonedTouch = `
tds: [{memory: 64M}]
timeline:
  - boot: {accept: eager}
  - memory_failure: {gpa: 8M}
  - touch: {start: 8M, size: 4K}
`

// Expectations: a wrong MRTD or a bound broken fails the run (exit 1),
// and expect_error turns an expected failure into a passed expectation.
func TestExpectations(t *testing.T) {
	r := mustRun(t, "e.yaml", poisonedTouch+`    expect_error: EHWPOISON
  - idle: {time: 1ms}
    expect_error: EINVAL
expect:
  mrtd: {td0: 000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000}
  seamcalls:
    TDH.MEM.PAGE.AUG: {min: 1}
    total: {max: 10}
`)
	got := map[string]bool{}
	for _, e := range r.Expectations {
		got[e.What] = e.OK
	}
	want := map[string]bool{"timeline[2] fails with EHWPOISON": true, "timeline[3] fails with EINVAL": false,
		"mrtd td0": false, "seamcalls TDH.MEM.PAGE.AUG in [1, inf]": true, "seamcalls total in [0, 10]": false}
	if !reflect.DeepEqual(got, want) || !r.Failed() {
		t.Fatalf("expectations %v, want %v", got, want)
	}
}

// A step that fails without expect_error stops the run; the report says
// which step, and teardown still reclaims everything.
func TestRunStops(t *testing.T) {
	r, err := Run(mustParse(t, "e.yaml", poisonedTouch+"  - idle: {time: 1ms}\n"), Options{})
	if err == nil || !strings.Contains(r.Error, "timeline[2] (touch)") || len(r.Violations) != 0 || r.Teardown.LeakedPages != 0 {
		t.Fatalf("err %v, report error %q, violations %v", err, r.Error, r.Violations)
	}
}

// The schema lists every key the loader knows, and no key is allowed that
// the loader would refuse.
func TestSchemaMatchesTypes(t *testing.T) {
	b, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Props map[string]any            `json:"properties"`
		Defs  map[string]map[string]any `json:"$defs"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if props, _ := s.Defs["Step"]["properties"].(map[string]any); s.Defs["Step"]["additionalProperties"] != false || len(props) != len(opKinds)+1 {
		t.Errorf("Step: %d properties for %d kinds and expect_error", len(props), len(opKinds))
	}
	for _, k := range opKinds {
		if k.new().Kind() != k.name {
			t.Errorf("registry entry %s makes a %s step", k.name, k.new().Kind())
		}
	}
	for _, typ := range []reflect.Type{reflect.TypeOf(TD{}), reflect.TypeOf(Policies{})} {
		def := s.Defs[typ.Name()]
		props, _ := def["properties"].(map[string]any)
		if def["additionalProperties"] != false || len(props) != typ.NumField() {
			t.Errorf("%s: %d properties for %d fields, additionalProperties %v", typ.Name(), len(props), typ.NumField(), def["additionalProperties"])
		}
	}
	if len(s.Props) != reflect.TypeOf(Scenario{}).NumField() {
		t.Errorf("top level: %d properties", len(s.Props))
	}
}

// --policy overrides follow the file's rules.
func TestSetPolicy(t *testing.T) {
	f, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.SetPolicy("hugepages", "1G"); err != nil || f.Host.TDX.MaxLevel != "1G" {
		t.Fatalf("%v, max level %q", err, f.Host.TDX.MaxLevel)
	}
	for _, bad := range [][2]string{{"hugepages", "3M"}, {"dynamic_pamt", "perhaps"}, {"colour", "red"}, {"populate", "gmem_populate"}} {
		if err := f.SetPolicy(bad[0], bad[1]); err == nil || !strings.HasPrefix(err.Error(), "--policy") {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

// policies.populate's old spelling "decoupled" still loads and means
// map_private_pfn, the merged 6.19 path (Kernel: tdx_gmem_post_populate()
// calling kvm_tdp_mmu_map_private_pfn(); Series: "[PATCH v4 00/28] KVM:
// x86/mmu: TDX post-populate cleanups",
// 20251030200951.3402865-1-seanjc@google.com).
func TestPopulateOldSpelling(t *testing.T) {
	f, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if f.Scenario.Policies.Populate != "map_private_pfn" {
		t.Errorf("default populate %q", f.Scenario.Policies.Populate)
	}
	if err := f.SetPolicy("populate", "decoupled"); err != nil || f.Scenario.Policies.Populate != "map_private_pfn" {
		t.Errorf("decoupled: %v, %q", err, f.Scenario.Policies.Populate)
	}
	if err := f.SetPolicy("populate", "decouple"); err == nil {
		t.Error("a misspelling was accepted")
	}
}
