package scenario

import (
	"encoding/json"
	"testing"
)

// A caller-driven run stops at every boundary, its views follow the
// timeline, and its report is Run's byte for byte; a failing step is the
// last boundary, with its error.
func TestRunner(t *testing.T) {
	f, err := Parse("s.yaml", []byte("tds: [{memory: 64M, vcpus: 2}]\ntimeline:\n  - boot: {accept: eager}\n  - convert: {count: 2, size: 16K}\n  - idle: {time: 1ms}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := Run(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Start(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var at []string
	for {
		v := r.View()
		at = append(at, v.At)
		if v.Err != nil || len(v.World.TDs) != 1 {
			t.Fatalf("%s: %v, %d TDs", v.At, v.Err, len(v.World.TDs))
		}
		if !r.More() {
			break
		}
		r.Next()
	}
	if len(at) != 4 || at[0] != "build" || at[3] != "timeline[2] (idle)" {
		t.Errorf("boundaries %q", at)
	}
	got, err := r.Report()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(want)
	b, _ := json.Marshal(got)
	if string(a) != string(b) {
		t.Errorf("report differs from Run's:\n%s\n%s", a, b)
	}
	if v := r.View(); v.At != "teardown, end checks" || len(v.World.TDs) != 0 {
		t.Errorf("after Report: %s, %d TDs", v.At, len(v.World.TDs))
	}

	f, err = Parse("s.yaml", []byte("tds: [{memory: 64M}]\ntimeline:\n  - boot: {}\n  - memory_failure: {gpa: 0x1000}\n  - touch: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	// Report before the end skips the steps left.
	r, err = Start(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Next()
	if rep, err := r.Report(); err != nil || len(rep.Phases) == 0 {
		t.Fatalf("early report: %v", err)
	}
}
