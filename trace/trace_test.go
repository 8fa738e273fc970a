package trace_test

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/scenario"
	"github.com/tdxsim/tdxsim/trace"
)

const small = `
tds: [{memory: 64M, vcpus: 2, image: [{gpa: 62M, size: 64K, measure: true}]}]
timeline:
  - boot: {accept: lazy, upfront: 8M}
  - convert: {count: 4, size: 16K}
`

func record(t *testing.T) *trace.Recorder {
	t.Helper()
	f, err := scenario.Parse("small.yaml", []byte(small))
	if err != nil {
		t.Fatal(err)
	}
	rec := trace.New(report.DefaultCosts().Of)
	if _, err := scenario.Run(f, scenario.Options{Sink: rec, TraceLocks: true}); err != nil {
		t.Fatal(err)
	}
	return rec
}

// The Chrome trace is valid trace-event JSON with a named track per
// vCPU, SEAMCALLs as slices of their modeled cost, lock holds, EPT
// violations and splits.
func TestChrome(t *testing.T) {
	var b bytes.Buffer
	if err := record(t).WriteChrome(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		TraceEvents []struct {
			Name, Ph, Cat string
			TS            float64
			Dur           *float64
			TID           int32
			Args          map[string]any
		}
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	seen := map[string]int{}
	var last float64
	for _, e := range doc.TraceEvents {
		switch {
		case e.Ph == "M" && e.Name == "thread_name":
			seen["track "+e.Args["name"].(string)]++
		case e.Ph == "X" && e.Cat == "seamcall":
			if e.Dur == nil || *e.Dur <= 0 {
				t.Errorf("SEAMCALL %s without a duration", e.Name)
			}
			seen["seamcall "+e.Name]++
		case e.Ph == "X" && e.Cat == "lock":
			seen["lock "+e.Name]++
		case e.Ph == "i":
			seen[e.Cat+" "+e.Name]++
		}
		if e.Ph != "M" {
			if e.TS+1e-3 < last && e.Ph == "i" {
				t.Fatalf("instant %s at %v before %v", e.Name, e.TS, last)
			}
			last = max(last, e.TS)
		}
	}
	for _, want := range []string{"track vmm", "track td0/vcpu0", "track td0/vcpu1", "seamcall TDH.MEM.PAGE.AUG",
		"seamcall TDH.MEM.PAGE.ADD", "seamcall TDH.MEM.PAGE.DEMOTE", "lock kvm.mmu_lock", "tdx ept_violation", "mmu split"} {
		if seen[want] == 0 {
			t.Errorf("no %q in the trace", want)
		}
	}
}

// The ftrace form has trace-cmd's line shape and the kernel's
// tracepoint names.
func TestFtrace(t *testing.T) {
	var b bytes.Buffer
	if err := record(t).WriteFtrace(&b); err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^ *\S+-\d+ +\[\d{3}\] +\d+\.\d{6}: [a-z0-9_]+: `)
	names := map[string]bool{}
	for i, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		if !line.MatchString(l) {
			t.Fatalf("line %d not in trace-cmd shape: %q", i, l)
		}
		names[strings.SplitN(strings.SplitN(l, ": ", 2)[1], ":", 2)[0]] = true
	}
	for _, n := range []string{"kvm_page_fault", "kvm_tdp_mmu_spte_changed", "kvm_mmu_split_huge_page", "tdx_seamcall", "lock_acquire"} {
		if !names[n] {
			t.Errorf("no %s line", n)
		}
	}
}

type chromeDoc struct {
	TraceEvents []struct {
		Name, Ph, Cat string
		TS            float64
		TID           int32
		Args          map[string]any
	}
}

func chrome(t *testing.T, rec *trace.Recorder) chromeDoc {
	t.Helper()
	var b bytes.Buffer
	if err := rec.WriteChrome(&b); err != nil {
		t.Fatal(err)
	}
	var doc chromeDoc
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	return doc
}

// Each vCPU is one track for the whole run: every step runs its vCPUs on
// new simulated threads, and those share the first one's track id.
func TestOneTrackPerVCPU(t *testing.T) {
	doc := chrome(t, record(t))
	names := map[string]int{}
	tids := map[int32]string{}
	for _, e := range doc.TraceEvents {
		if e.Ph == "M" && e.Name == "thread_name" {
			n := e.Args["name"].(string)
			names[n]++
			tids[e.TID] = n
		}
	}
	for n, c := range names {
		if c != 1 {
			t.Errorf("track %q named %d times", n, c)
		}
	}
	used := map[string]bool{}
	for _, e := range doc.TraceEvents {
		if e.Ph == "M" {
			continue
		}
		n, ok := tids[e.TID]
		if !ok {
			t.Fatalf("%s on tid %d, which has no track name", e.Name, e.TID)
		}
		used[n] = true
	}
	if !used["td0/vcpu0"] || !used["td0/vcpu1"] {
		t.Errorf("vCPU tracks used: %v", used)
	}
}

// SetWindow keeps only the steps in the window; the clock runs through
// the others.
func TestWindow(t *testing.T) {
	f, err := scenario.Parse("small.yaml", []byte(small))
	if err != nil {
		t.Fatal(err)
	}
	rec := trace.New(report.DefaultCosts().Of)
	rec.SetWindow(1, 1) // the convert step only
	r, err := scenario.Start(f, scenario.Options{Sink: rec})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; r.More(); i++ {
		rec.BeforeStep(i)
		r.Next()
	}
	if _, err := r.Report(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range chrome(t, rec).TraceEvents {
		seen[e.Name]++
	}
	// the convert step converts and AUGs again, but builds nothing
	if seen["TDH.MEM.PAGE.ADD"] != 0 || seen["TDH.MR.EXTEND"] != 0 || seen["TDH.MEM.PAGE.AUG"] == 0 {
		t.Errorf("window 1..1: %v", seen)
	}
}
