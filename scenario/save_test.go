package scenario

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every example survives Marshal and Parse: the file read back marshals to
// the same bytes, and runs to the same report.
func TestMarshalRoundTrip(t *testing.T) {
	eachExample(t, nil, func(t *testing.T, f *File) {
		if len(f.TDs) > 0 && len(f.TDs[0].Image) > 0 && f.TDs[0].Image[0].File != "" {
			t.Skip("image files are relative to the example")
		}
		b, err := Marshal(&f.Scenario)
		if err != nil {
			t.Fatal(err)
		}
		g, err := Parse("roundtrip.yaml", b)
		if err != nil {
			t.Fatalf("%v\n%s", err, b)
		}
		b2, err := Marshal(&g.Scenario)
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("second marshal differs (%v):\n%s\n---\n%s", err, b, b2)
		}
	})
}

// FuzzParse feeds the scenario loader arbitrary bytes (seeded with every
// example): it must never panic, a refusal must be an *InputError naming
// the file, and what it accepts must write out and load back the same
// (go test -fuzz=FuzzParse ./scenario).
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../examples/*.yaml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("tds: [{memory: 3M}]"))
	f.Add([]byte("timeline: [{parallel: [{touch: {}}, {touch: {}}]}]"))
	f.Add([]byte("tds:\n  - name: a\n    name: b\n"))
	f.Add([]byte("tds: [&t {memory: 2G, memslots: &m [{size: 1G}, {size: 1G}]}, *t, *t]\n"))
	f.Add([]byte("tds: [{memory: 64M}]\nexpect: {error: EINVALL}\ninject: {alloc_fail: [{source: buddy, nth: 1}]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sf, err := Parse("fuzz.yaml", b)
		if err != nil {
			var ie *InputError
			if !errors.As(err, &ie) || !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("refusal is not an InputError naming the file: %T %v", err, err)
			}
			return
		}
		out, err := Marshal(&sf.Scenario)
		if err != nil {
			t.Fatalf("accepted but cannot write out: %v", err)
		}
		again, err := Parse("again.yaml", out)
		if err != nil {
			t.Fatalf("written out, refused on reload: %v\n%s", err, out)
		}
		if out2, _ := Marshal(&again.Scenario); string(out2) != string(out) {
			t.Fatalf("round trip changed the file:\n%s\n---\n%s", out, out2)
		}
	})
}
