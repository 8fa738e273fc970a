package scenario

import (
	"testing"

	"github.com/tdxsim/tdxsim/report"
)

// mustParse parses a scenario the test wrote; a parse error fails the test.
func mustParse(t *testing.T, name, text string) *File {
	t.Helper()
	f, err := Parse(name, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// mustRun parses and runs a scenario the test wrote; a parse or run error
// fails the test.
func mustRun(t *testing.T, name, text string) *report.Run {
	t.Helper()
	r, err := Run(mustParse(t, name, text), Options{})
	if r == nil || err != nil {
		t.Fatalf("run: %v", err)
	}
	return r
}
