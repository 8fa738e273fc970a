package fuzz

import (
	"testing"
)

// A short default-policy campaign finds nothing.
func TestDefaultCampaignClean(t *testing.T) {
	runs := 60
	if testing.Short() {
		runs = 15
	}
	sum, err := Campaign(Config{Seed: 1, Runs: runs})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Violations) != 0 {
		var b []byte
		for _, fd := range sum.Findings {
			f, _ := Generate(fd.Seed, nil)
			b, _ = Reproducer(fd.Seed, fd.Broken[0], Shrink(f, fd.Broken[0], 0))
			t.Errorf("seed %d breaks %v:\n%s\n%s", fd.Seed, fd.Broken, b, RunOne(Shrink(f, fd.Broken[0], 0)).Report.Violations)
		}
	}
	if sum.Runs != runs || sum.Steps == 0 || sum.Interleavings == 0 {
		t.Errorf("summary %+v", sum)
	}
}
