package main

import (
	"runtime"
	"strings"
	"testing"
)

// Every command has help: `tdxsim help CMD` on stdout and `CMD --help`,
// each with the command's usage line, its flags and examples.
func TestHelpPerCommand(t *testing.T) {
	for _, c := range commands {
		if c.name == "help" {
			continue
		}
		code, out, errs := run("help", c.name)
		if code != 0 || !strings.Contains(out, "usage: tdxsim "+c.name) || !strings.Contains(out, "examples:\n  tdxsim ") || errs != "" {
			t.Errorf("help %s: exit %d, stdout %q, stderr %q", c.name, code, out, errs)
		}
		if c.name != "version" && !strings.Contains(out, "flags:") {
			t.Errorf("help %s: no flags in %q", c.name, out)
		}
		code, out, errs = run(c.name, "--help")
		if code != 0 || !strings.Contains(out+errs, "usage: tdxsim "+c.name) || !strings.Contains(out+errs, "examples:") {
			t.Errorf("%s --help: exit %d, %q", c.name, code, out+errs)
		}
	}
	if code, out, _ := run("help"); code != 0 || !strings.Contains(out, "commands:") {
		t.Errorf("help: exit %d, %q", code, out)
	}
	if code, _, errs := run("help", "frobnicate"); code != 2 || !strings.Contains(errs, `unknown command "frobnicate"`) {
		t.Errorf("help frobnicate: exit %d, %q", code, errs)
	}
}

// version and --version print the module, the revision (or why there is
// none: a test binary has no VCS stamp) and the Go version.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, errs := run(args...)
		if code != 0 || !strings.HasPrefix(out, "tdxsim ") || !strings.Contains(out, "\nrevision ") ||
			!strings.Contains(out, "built with "+runtime.Version()) {
			t.Errorf("%v: exit %d, %q %q", args, code, out, errs)
		}
	}
	if code, _, errs := run("version", "x"); code != 2 || !strings.Contains(errs, "takes no arguments") {
		t.Errorf("version x: exit %d, %q", code, errs)
	}
}

// A FILE of "-" is standard input, read once even when the command loads
// it twice (compare with --policy).
func TestScenarioFromStdin(t *testing.T) {
	defer func(r any) { stdin = r.(interface{ Read([]byte) (int, error) }) }(stdin)
	stdin = strings.NewReader(small4K)
	code, out, errs := run("run", "-", "--json")
	if code != 0 || !strings.Contains(out, `"scenario": "stdin"`) {
		t.Fatalf("run -: exit %d: %s", code, errs)
	}
	stdin = strings.NewReader(small4K)
	if code, out, errs := run("compare", "--policy", "dynamic_pamt=false", "-"); code != 0 || !strings.Contains(out, "B: - dynamic_pamt=false") {
		t.Fatalf("compare -: exit %d: %s %s", code, out, errs)
	}
	stdin = strings.NewReader("tds:\n  - {memory: 3M}\n")
	if code, _, errs := run("run", "-"); code != 2 || !strings.Contains(errs, "stdin:2: tds[0].memory") {
		t.Fatalf("run - (bad): exit %d: %s", code, errs)
	}
}
