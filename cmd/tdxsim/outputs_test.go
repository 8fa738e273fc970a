package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Output paths and numeric ranges are refused before any work, as bad
// input (exit 2), never as a failed check; nothing is left behind.
func TestOutputsAndRangesCheckedFirst(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o644)
	dup := filepath.Join(dir, "dup.yaml")
	os.WriteFile(dup, []byte("tds:\n  - memory: 2G\n    memory: 4G\n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"fuzz", "--runs", "0"}, "--runs 0: want at least 1 (leave --runs out for 100 runs"},
		{[]string{"fuzz", "--runs", "-3"}, "--runs -3: want at least 1"},
		{[]string{"fuzz", "--duration", "-1s"}, "--duration -1s"},
		{[]string{"fuzz", "--shrink-runs", "0"}, "--shrink-runs 0: want at least 1"},
		{[]string{"fuzz", "--out", file}, "--out " + file + ": is a file: want a directory"},
		{[]string{"fuzz", "--out", filepath.Join(file, "sub")}, file + " is a file: want a directory"},
		{[]string{"run", "--svg", filepath.Join(dir, "no", "m.svg")}, "does not exist"},
		{[]string{"run", "--svg", dir}, "is a directory: want a file to write"},
		{[]string{"run", "--trace", filepath.Join(file, "t.json")}, "is not a directory"},
		{[]string{"replay", "--trace", dir, dup}, "--trace " + dir + ": is a directory"},
		{[]string{"run", dup}, "dup.yaml:3: tds[0].memory: duplicate key (first at line 2)"},
		{[]string{"run", dir}, "not a regular file (a directory)"},
	} {
		code, stdout, errs := run(c.args...)
		if code != 2 || !strings.Contains(errs, c.want) || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2, no output and %q", c.args, code, stdout, errs, c.want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("the checks left files behind: %v", ents)
	}
}

// A write that fails after the run (here /dev/full, where a write always
// fails with ENOSPC) is exit 2, not "a check failed".
func TestWriteFailureIsNotACheckFailure(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	file := writeScenario(t, small4K)
	code, _, errs := run("run", "--svg", "/dev/full", file)
	if code != 2 || !strings.Contains(errs, "writing the SVG") {
		t.Fatalf("exit %d, stderr %q; want 2 and the write's error", code, errs)
	}
}
