package fuzz

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tdxsim/tdxsim/scenario"
)

// K schedules of one scenario are K scheduler seeds: the summary is the
// same for any worker count, counts K schedules per scenario, and sees
// more distinct interleavings than one schedule each; PCT likewise.
func TestSchedulesSameSummary(t *testing.T) {
	runs := testRuns(4, 2)
	one := mustCampaign(t, Config{Seed: 11, Runs: runs, Workers: 1})
	for _, strat := range []string{"random", "pct"} {
		var got []string
		for _, w := range []int{1, 2} {
			sum := mustCampaign(t, Config{Seed: 11, Runs: runs, Workers: w, Schedules: 3, Strategy: strat})
			if sum.Schedules != 3*runs || sum.Strategy != strat {
				t.Errorf("%s: %d schedules (%s), want %d", strat, sum.Schedules, sum.Strategy, 3*runs)
			}
			if strat == "random" && sum.Interleavings <= one.Interleavings {
				t.Errorf("3 schedules: %d interleavings, 1 schedule: %d", sum.Interleavings, one.Interleavings)
			}
			sum.ElapsedMS, sum.RunsPerSec, sum.InterleavingsPerSec, sum.Workers = 0, 0, 0, 0
			b, _ := json.Marshal(sum)
			got = append(got, string(b))
		}
		if got[0] != got[1] {
			t.Errorf("%s: 1 worker:\n%s\n2 workers:\n%s", strat, got[0], got[1])
		}
	}
}

// A finding under a later schedule writes a reproducer that pins the
// schedule (schedule.seed), so that replaying it breaks the invariant.
func TestScheduleReproducerReplays(t *testing.T) {
	f, err := scenario.Load(filepath.Join("testdata", "hazards", "split_order-folio_first.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	runs := Config{Schedules: 3, Strategy: "pct", Depth: 2}.runSchedules(f, *f.Seed)
	if len(runs) != 3 {
		t.Fatalf("%d runs", len(runs))
	}
	last := runs[2]
	if last.f.Schedule.Strategy != "pct" || last.f.Schedule.Seed == nil || *last.f.Schedule.Seed == *f.Seed {
		t.Fatalf("schedule 2 not pinned: %+v", last.f.Schedule)
	}
	b, err := Reproducer(1, "x", last.f)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := scenario.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	o := RunOne(g)
	if o.Schedule != last.o.Schedule || !slices.Equal(o.Broken, last.o.Broken) {
		t.Errorf("replayed schedule %s %v, want %s %v", o.Schedule, o.Broken, last.o.Schedule, last.o.Broken)
	}
}
