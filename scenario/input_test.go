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
