package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// exitOutput is the exit code when output could not be written. It is the
// bad-input code: the path given was not one the command can write, and a
// failed write is never "a check failed". Paths are checked before any run
// (checkOutFile, checkOutDir), so this is rare after work has started.
const exitOutput = exitBadInput

// checkOutFile refuses, before any work, an output FILE that cannot be
// written: a directory, a missing parent directory, a parent that is not
// a directory, or a file that cannot be opened for writing. "" is no
// output. An existing file is left as it is (opened without truncation);
// one the check created is removed again.
func checkOutFile(flagName, path string) error {
	if path == "" {
		return nil
	}
	bad := func(rule string) error { return fmt.Errorf("--%s %s: %s", flagName, path, rule) }
	st, err := os.Stat(path)
	existed := err == nil
	if existed {
		if st.IsDir() {
			return bad("is a directory: want a file to write")
		}
	} else if errors.Is(err, syscall.ENOTDIR) {
		return bad(filepath.Dir(path) + " is not a directory")
	} else if !errors.Is(err, os.ErrNotExist) {
		return bad(err.Error())
	} else if pst, perr := os.Stat(filepath.Dir(path)); perr != nil {
		return bad("its directory " + filepath.Dir(path) + " does not exist")
	} else if !pst.IsDir() {
		return bad(filepath.Dir(path) + " is not a directory")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return bad("cannot be written: " + unwrapPath(err))
	}
	f.Close()
	if !existed {
		os.Remove(path)
	}
	return nil
}

// checkOutDir refuses, before any work, an output DIRECTORY that cannot be
// made or written: a path that is a file, or under one, or a directory
// without write permission. "" is no output. Nothing is created.
func checkOutDir(flagName, path string) error {
	if path == "" {
		return nil
	}
	bad := func(rule string) error { return fmt.Errorf("--%s %s: %s", flagName, path, rule) }
	p := path
	for {
		st, err := os.Stat(p)
		if err == nil {
			if !st.IsDir() {
				if p == path {
					return bad("is a file: want a directory")
				}
				return bad(p + " is a file: want a directory")
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return bad(err.Error())
		}
		up := filepath.Dir(p)
		if up == p {
			break
		}
		p = up
	}
	f, err := os.CreateTemp(p, ".tdxsim-check-*")
	if err != nil {
		return bad("cannot be written: " + unwrapPath(err))
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

func unwrapPath(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// fuzzRanges checks fuzz's numeric flags and its --out directory after
// parsing, before the campaign: --runs given as 0 is refused plainly
// (left out, it means 100 runs, or as many as --duration allows).
func fuzzRanges(fs *flag.FlagSet, runs int, duration time.Duration, shrinkRuns int, out string) error {
	runsSet := false
	fs.Visit(func(fl *flag.Flag) { runsSet = runsSet || fl.Name == "runs" })
	switch {
	case runs < 0 || (runsSet && runs == 0):
		return fmt.Errorf("--runs %d: want at least 1 (leave --runs out for 100 runs, or for as many as --duration allows)", runs)
	case duration < 0:
		return fmt.Errorf("--duration %v: want a positive duration such as 60s or 10m", duration)
	case shrinkRuns < 1:
		return fmt.Errorf("--shrink-runs %d: want at least 1", shrinkRuns)
	}
	return checkOutDir("out", out)
}
