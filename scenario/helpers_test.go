package scenario

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/tdxsim/tdxsim/report"
)

// eachExample runs fn on every example (examples/*.yaml) loaded, as a
// subtest named after the file; skip, when it gives a reason for a file
// name, skips that example before it is loaded.
func eachExample(t *testing.T, skip func(name string) string, fn func(t *testing.T, f *File)) {
	t.Helper()
	files, _ := filepath.Glob("../examples/*.yaml")
	if len(files) < 10 {
		t.Fatalf("%d examples", len(files))
	}
	for _, p := range files {
		t.Run(filepath.Base(p), func(t *testing.T) {
			if skip != nil {
				if why := skip(filepath.Base(p)); why != "" {
					t.Skip(why)
				}
			}
			fn(t, loadExample(t, p))
		})
	}
}

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

// runClean runs f; a run error or a failed check fails the test with the
// report's text.
func runClean(t *testing.T, f *File, o Options) *report.Run {
	t.Helper()
	r, err := Run(f, o)
	if err != nil || r.Failed() {
		var b bytes.Buffer
		r.WriteText(&b)
		t.Fatalf("%v\n%s", err, b.String())
	}
	return r
}
