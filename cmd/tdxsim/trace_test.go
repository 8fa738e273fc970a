package main

import (
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --trace FILE.json.gz writes the trace gzip-compressed; --trace-window
// keeps only the steps asked for.
func TestTraceGzipAndWindow(t *testing.T) {
	file := writeScenario(t, small4K)
	dir := t.TempDir()
	whole, win := filepath.Join(dir, "t.json.gz"), filepath.Join(dir, "w.json.gz")
	if code, _, errs := run("run", file, "--trace", whole); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if code, _, errs := run("replay", file, "--trace", win, "--trace-window", "1..teardown"); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	count := func(p string) map[string]int {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: not gzip: %v", p, err)
		}
		var doc struct {
			TraceEvents []struct{ Name string } `json:"traceEvents"`
		}
		if err := json.NewDecoder(zr).Decode(&doc); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		n := map[string]int{}
		for _, e := range doc.TraceEvents {
			n[e.Name]++
		}
		return n
	}
	a, b := count(whole), count(win)
	if a["TDH.MEM.PAGE.ADD"] != 512 || b["TDH.MEM.PAGE.ADD"] != 0 || b["TDH.MEM.PAGE.REMOVE"] == 0 ||
		b["TDH.MEM.PAGE.AUG"] == 0 || b["TDH.MEM.PAGE.AUG"] >= a["TDH.MEM.PAGE.AUG"] {
		t.Errorf("whole %v\nwindow %v", a, b)
	}
	for _, c := range []struct{ window, want string }{
		{"3", "step 3: the timeline has 3 steps (0..2)"},
		{"2..1", "the first step comes after the last"},
		{"x..2", `"x": want a timeline index`},
	} {
		code, _, errs := run("run", file, "--trace", filepath.Join(dir, "x.json"), "--trace-window", c.window)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("--trace-window %s: exit %d, %q; want 2 and %q", c.window, code, errs, c.want)
		}
	}
	if code, _, errs := run("run", file, "--trace-window", "1"); code != 2 || !strings.Contains(errs, "goes with --trace") {
		t.Errorf("--trace-window without --trace: exit %d, %q", code, errs)
	}
}
