package fuzz

import (
	"path/filepath"
	"testing"

	"github.com/tdxsim/tdxsim/scenario"
)

// testRuns is a test campaign's length: full, or short under -short.
func testRuns(full, short int) int {
	if testing.Short() {
		return short
	}
	return full
}

// mustCampaign runs a campaign; an error fails the test.
func mustCampaign(t *testing.T, cfg Config) *Summary {
	t.Helper()
	sum, err := Campaign(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// eachReproducer runs every reproducer in testdata/dir once and hands
// fn its path and outcome; a directory with none, or one that does not
// load, fails the test.
func eachReproducer(t *testing.T, dir string, fn func(p string, o Outcome)) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("testdata", dir, "*.yaml"))
	if len(files) == 0 {
		t.Fatalf("no reproducers in testdata/%s", dir)
	}
	for _, p := range files {
		f, err := scenario.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		fn(p, RunOne(f))
	}
}
