package scenario

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Duplicate keys at any depth are bad input naming the second one's line.
func TestDuplicateKeysRefused(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"tds:\n  - name: a\ntds:\n  - name: b\n", "x.yaml:3: tds: duplicate key (first at line 1)"},
		{"tds:\n  - name: a\n    name: b\n", "x.yaml:3: tds[0].name: duplicate key"},
		{"tds:\n  - name: a\n    memslots:\n      - {size: 1G, size: 2G}\n", "tds[0].memslots[0].size: duplicate key"},
		{"tds:\n  - name: a\ntimeline:\n  - idle: {}\n    idle: {}\n", "timeline[0].idle: duplicate key"},
	} {
		_, err := Parse("x.yaml", []byte(c.text))
		var ie *InputError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an InputError containing %q", c.text, err, c.want)
		}
	}
}

// Aliases that expand past the node cap are refused, not expanded.
func TestAliasExpansionCapped(t *testing.T) {
	// 701 TDs, 700 of them aliases of one with 2,000 memslots: ~4M nodes.
	text := "tds:\n  - &td {name: a, memslots: &m [" + strings.Repeat("{size: 1G},", 1999) + "{size: 1G}]}\n" +
		"  - " + strings.TrimSuffix(strings.Repeat("*td\n  - ", 700), "\n  - ") + "\n"
	_, err := Parse("bomb.yaml", []byte(text))
	if err == nil || !strings.Contains(err.Error(), "expands to more than") {
		t.Fatalf("got %v, want the node cap", err)
	}
}

// A timeline grown through aliases to more than MaxSteps steps is
// refused at the step past the cap, in one line, before anything runs.
func TestTimelineStepCap(t *testing.T) {
	// 101 aliases of a parallel group of 100 idles: 10,201 steps in a
	// file of a few KiB.
	text := "tds: [{memory: 64M}]\ntimeline:\n  - parallel: &p [" + strings.TrimSuffix(strings.Repeat("{idle: {time: 1us}},", 100), ",") + "]\n" +
		strings.Repeat("  - parallel: *p\n", 100)
	_, err := Parse("long.yaml", []byte(text))
	if err == nil || !strings.Contains(err.Error(), "more than 10000 steps") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %v, want one line naming the step cap", err)
	}
}

// Only regular files of at most MaxFileBytes load.
func TestLoadRefusesNonRegularAndHugeFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file (a directory)") {
		t.Errorf("directory: %v", err)
	}
	if _, err := os.Stat("/dev/zero"); err == nil {
		if _, err := Load("/dev/zero"); err == nil || !strings.Contains(err.Error(), "not a regular file (a device)") {
			t.Errorf("/dev/zero: %v", err)
		}
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxFileBytes+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "byte cap") {
		t.Errorf("big file: %v", err)
	}
}

// Misspelt enumerated values are bad input at load, naming the field.
func TestEnumeratedValuesChecked(t *testing.T) {
	const td = "tds: [{memory: 64M}]\n"
	for _, c := range []struct{ text, want string }{
		{"host: {tdx: {costs: {TDH.MEM.PAGE.AGU: 5}}}\n", `host.tdx.costs.TDH.MEM.PAGE.AGU: unknown leaf "TDH.MEM.PAGE.AGU"`},
		{"host: {tdx: {costs: {TDG.MEM.PAGE.ACCPT/2M: 5}}}\n", `unknown leaf "TDG.MEM.PAGE.ACCPT"`},
		{"expect: {seamcalls: {TDH.MEM.TRAK: {min: 1}}}\n", `expect.seamcalls.TDH.MEM.TRAK: not a SEAMCALL leaf name`},
		{"expect: {error: EINVALL}\n", `expect.error: unknown errno name "EINVALL"`},
		{"timeline:\n  - boot: {td: td0}\n    expect_error: ENOMEN\n", `timeline[0].expect_error: unknown errno name "ENOMEN"`},
		{"timeline:\n  - parallel:\n      - boot: {td: td0}\n        expect_error: EFOO\n      - boot: {td: td0}\n", `timeline[0].parallel[0].expect_error: unknown errno name "EFOO"`},
		{"inject: {alloc_fail: [{source: kvm.mmu_shadow_cache, nth: 1}]}\n", `inject.alloc_fail[0].source: unknown allocation source "kvm.mmu_shadow_cache"`},
		{"inject: {busy_leaves: [TDH.MEM.PAGE.AGU]}\n", `unknown SEAMCALL leaf "TDH.MEM.PAGE.AGU"`},
		{"inject: {fail: [{leaf: TDH.MEM.TRACK, nth: 1, status: TDX_BUSY}]}\n", `unknown TDX status "TDX_BUSY"`},
		{"policies: {hugepages: 4M}\n", `policies.hugepages`},
	} {
		_, err := Parse("e.yaml", []byte(td+c.text))
		var ie *InputError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.text, err, c.want)
		}
	}
	// Known values load: an errno name, text that is not one, a level key.
	for _, ok := range []string{"expect: {error: ENOMEM}\n", "expect: {error: out of memory}\n",
		"host: {tdx: {costs: {TDG.MEM.PAGE.ACCEPT/2M: 5, TDH.MEM.PAGE.AUG: 3}}}\n"} {
		if _, err := Parse("e.yaml", []byte(td+ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}
