package mrtd

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// FuzzLayout feeds the layout loader arbitrary bytes (go test
// -fuzz=FuzzLayout ./mrtd): it never panics, a refusal is an *InputError
// naming the file and no Go type name, and an accepted layout validates.
func FuzzLayout(f *testing.F) {
	if b, err := os.ReadFile("../examples/mrtd/layout.yaml"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{"regions:\n  - {gpa: 0, size: 4K, fill: 0x90, measure: true}\n",
		"regions:\n  - {gpa: 0, size: 4K, gpa: 0}\n", "regions: [&r {gpa: 0, size: 4K}, *r]\n",
		"regions: 3\n", "regions:\n  - [1]\n", "x: 1\n", "regions: []\n---\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := Parse("fuzz.yaml", b)
		if err == nil {
			return
		}
		var ie *InputError
		if !errors.As(err, &ie) || !strings.HasPrefix(err.Error(), "fuzz.yaml") {
			t.Fatalf("refusal is not an InputError naming the file: %T %v", err, err)
		}
		for _, goName := range []string{"mrtd.", "[]", "uint64", "*int"} {
			if strings.Contains(ie.Field+ie.Rule, goName) {
				t.Fatalf("error names a Go type (%s): %v", goName, err)
			}
		}
	})
}
