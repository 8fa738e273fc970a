package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestExploreExitCodes: the two-vCPU lazy-accept race is exhausted clean
// at k=2 (exit 0, says so); the populate=gmem_populate hazard is found
// with a reproducer replay runs (exit 1); bad flags are exit 2.
func TestExploreExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"explore", "../../examples/explore-lazy-accept.yaml", "--preemptions", "2", "--out", ""}, &out, &errb); code != exitOK {
		t.Fatalf("lazy accept: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "with ≤ 2 preemptions: no violation") {
		t.Fatalf("no exhaustion line:\n%s", out.String())
	}
	dir := t.TempDir()
	out.Reset()
	code := Main([]string{"explore", "../../fuzz/testdata/hazards/populate-gmem_populate.yaml", "--preemptions", "2", "--out", dir, "--json"}, &out, &errb)
	if code != exitCheck {
		t.Fatalf("hazard: exit %d", code)
	}
	var res struct {
		Violation *struct {
			Broken     []string `json:"broken"`
			Reproducer string   `json:"reproducer"`
		} `json:"violation"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.Violation == nil {
		t.Fatalf("--json: %v\n%s", err, out.String())
	}
	if filepath.Dir(res.Violation.Reproducer) != dir {
		t.Fatalf("reproducer %q not in %s", res.Violation.Reproducer, dir)
	}
	if code := Main([]string{"replay", res.Violation.Reproducer}, &bytes.Buffer{}, &bytes.Buffer{}); code != exitCheck {
		t.Fatalf("replay of the reproducer: exit %d, want 1", code)
	}
	for _, bad := range [][]string{{"explore"}, {"explore", "x.yaml", "--preemptions", "-1"}, {"explore", "../../examples/explore-lazy-accept.yaml", "--max-schedules", "-3"}} {
		if code := Main(bad, &bytes.Buffer{}, &bytes.Buffer{}); code != exitBadInput {
			t.Errorf("%v: exit %d, want 2", bad, code)
		}
	}
}
