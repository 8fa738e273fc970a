package main

import (
	"flag"
	"reflect"
	"strings"
	"testing"
)

func TestFlagsFirst(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Bool("json", false, "")
	fs.String("addr", "", "")
	var p policyFlag
	fs.Var(&p, "policy", "")
	for _, c := range []struct{ in, want string }{
		{"a.yaml --json", "--json -- a.yaml"},
		{"a.yaml b.yaml --addr :0 --policy k=v", "--addr :0 --policy k=v -- a.yaml b.yaml"},
		{"--json=false a.yaml -addr=x", "--json=false -addr=x -- a.yaml"},
		{"- --json", "--json -- -"},
		{"a.yaml -- --json b", "-- a.yaml --json b"},
		{"--addr --json a", "--addr --json -- a"}, // --addr takes the next word, as flag does
		{"--nope a --addr", "--nope --addr -- a"},
		{"", "--"},
	} {
		got := strings.Join(flagsFirst(fs, strings.Fields(c.in)), " ")
		if got != c.want {
			t.Errorf("%q: got %q, want %q", c.in, got, c.want)
		}
	}
	if err := fs.Parse(flagsFirst(fs, []string{"x", "--policy", "a=b", "-", "--json"})); err != nil ||
		!reflect.DeepEqual(fs.Args(), []string{"x", "-"}) || len(p) != 1 {
		t.Fatalf("%v %v %v", err, fs.Args(), p)
	}
}

// Every command takes its flags after its files, as the README writes them.
func TestFlagsAnywhere(t *testing.T) {
	file := writeScenario(t, small4K)
	code, out, errs := run("run", file, "--json", "--seed", "3")
	if code != 0 || !strings.HasPrefix(out, "{") {
		t.Fatalf("run FILE --json: exit %d: %s", code, errs)
	}
	// serve [FILE [FILE2]] [--addr ...] [--policy k=v]: a bad address is
	// only reached once the flags after FILE were taken.
	code, _, errs = run("serve", file, "--addr", "bad:addr:x", "--policy", "hugepages=2M")
	if code != 2 || !strings.Contains(errs, "bad:addr:x") {
		t.Fatalf("serve FILE --addr: exit %d: %s", code, errs)
	}
	code, _, errs = run("serve", file, file, "--policy", "hugepages=off")
	if code != 2 || !strings.Contains(errs, "--policy only with one") {
		t.Fatalf("serve FILE FILE2 --policy: exit %d: %s", code, errs)
	}
	code, _, errs = run("compare", file, "--policy", "dynamic_pamt=false", "--json")
	if code != 0 {
		t.Fatalf("compare FILE --policy: exit %d: %s", code, errs)
	}
}
