package fuzz

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// writeShard runs shard i of n and writes its summary as `fuzz --json`
// would, into dir/shard-i/summary.json.
func writeShard(t *testing.T, dir string, cfg Config) *Summary {
	t.Helper()
	out := filepath.Join(dir, "shard-"+string(rune('0'+cfg.Shard)))
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.Out = out
	sum := mustCampaign(t, cfg)
	b, _ := json.Marshal(sum)
	if err := os.WriteFile(filepath.Join(out, SummaryFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return sum
}

// TestMergeShards runs a campaign as two real shards and merges their
// summaries: the counts equal the one unsharded campaign over the same
// seeds, and a finding both shards make is kept once, with the smaller
// reproducer.
func TestMergeShards(t *testing.T) {
	base := Config{Seed: 1, Runs: 3, Schedules: 1, Workers: 1, Policies: [][2]string{{"zap_private_on_notifier", "true"}}}
	dir := t.TempDir()
	var shards []*Summary
	for i := range 2 {
		cfg := base
		cfg.Shard, cfg.Shards = i, 2
		shards = append(shards, writeShard(t, dir, cfg))
	}
	sums, names, err := ReadSummaries([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != 2 {
		t.Fatalf("read %d summaries from %v", len(sums), names)
	}
	got, err := Merge(sums, names)
	if err != nil {
		t.Fatal(err)
	}
	whole := base
	whole.Runs = 6
	want := mustCampaign(t, whole)
	if got.Runs != want.Runs || got.Steps != want.Steps || got.Schedules != want.Schedules || got.Seeds != want.Seeds {
		t.Fatalf("merged runs %d steps %d schedules %d seeds %v; unsharded %d %d %d %v",
			got.Runs, got.Steps, got.Schedules, got.Seeds, want.Runs, want.Steps, want.Schedules, want.Seeds)
	}
	for inv, n := range want.Violations {
		if got.Violations[inv] != n {
			t.Errorf("violations[%s] merged %d, unsharded %d", inv, got.Violations[inv], n)
		}
	}
	for class, n := range want.Outcomes {
		if got.Outcomes[class] != n {
			t.Errorf("outcomes[%s] merged %d, unsharded %d", class, got.Outcomes[class], n)
		}
	}
	if len(got.Coverage.StepKinds.Seen) != len(want.Coverage.StepKinds.Seen) || len(got.Coverage.Transitions.Seen) != len(want.Coverage.Transitions.Seen) {
		t.Errorf("coverage merged %d kinds %d transitions, unsharded %d %d", len(got.Coverage.StepKinds.Seen), len(got.Coverage.Transitions.Seen),
			len(want.Coverage.StepKinds.Seen), len(want.Coverage.Transitions.Seen))
	}
	seen := map[string]bool{}
	for _, fd := range got.Findings {
		if seen[fd.Signature()] {
			t.Errorf("finding %s kept twice", fd.Signature())
		}
		seen[fd.Signature()] = true
		for _, s := range shards {
			for _, o := range s.Findings {
				if o.Signature() == fd.Signature() && o.ShrunkSteps < fd.ShrunkSteps {
					t.Errorf("kept a %d-step reproducer of %s, a shard has %d", fd.ShrunkSteps, fd.Signature(), o.ShrunkSteps)
				}
			}
		}
	}
	if len(shards[0].Findings) == 0 || len(got.Findings) == 0 {
		t.Fatal("the rejected design was not found: the test checks nothing")
	}
}

// TestMergeRefuses: bad shard input is one error naming the file.
func TestMergeRefuses(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"runs": 1, "surprise": 2}`), 0o644)
	if _, _, err := ReadSummaries([]string{bad}); !errors.As(err, new(*MergeInputError)) {
		t.Fatalf("unknown field: %v", err)
	}
	if _, _, err := ReadSummaries([]string{filepath.Join(dir, "missing")}); err == nil {
		t.Fatal("a missing path was accepted")
	}
	empty := t.TempDir()
	if _, _, err := ReadSummaries([]string{empty}); err == nil {
		t.Fatal("a directory without summaries was accepted")
	}
	a := &Summary{Runs: 1, Kernel: "6.19", Violations: map[string]int{}, Findings: []Finding{}}
	b := &Summary{Runs: 1, Kernel: "7.0", Violations: map[string]int{}, Findings: []Finding{}}
	if _, err := Merge([]*Summary{a, b}, []string{"a.json", "b.json"}); !errors.As(err, new(*MergeInputError)) {
		t.Fatalf("shards of two kernels merged: %v", err)
	}
}
