package mrtd

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/internal/mrtdvec"
)

func write(t *testing.T, dir, name, body string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLayoutMRTD(t *testing.T) {
	dir := t.TempDir()
	fw := []byte(strings.Repeat("firmware!", 1000)) // 9000 bytes: 3 pages
	write(t, dir, "fw.bin", string(fw))
	p := write(t, dir, "layout.yaml", `
regions:
  - {gpa: 0xFFFC0000, file: fw.bin, measure: true}
  - {gpa: 1M, size: 5000, fill: 0xAA, measure: true}
  - {gpa: 0x2000, size: 4K, measure: false}
`)
	l, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Compute(l)
	if err != nil {
		t.Fatal(err)
	}
	fill := make([]byte, 5000)
	for i := range fill {
		fill[i] = 0xAA
	}
	want := mrtdvec.Hand([]mrtdvec.Region{{GPA: 0xFFFC0000, Data: fw, Measure: true},
		{GPA: 1 << 20, Data: fill, Measure: true}, {GPA: 0x2000, Data: make([]byte, 4096)}})
	if Hex(got) != Hex(want) || len(Hex(got)) != 96 {
		t.Fatalf("MRTD %s, want %s", Hex(got), Hex(want))
	}
}

func TestLayoutErrors(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "fw.bin", "x")
	cases := []struct{ body, want string }{
		{"", "empty layout"},
		{"regions: []", "regions: at least one region is required"},
		{"regions:\n  - {gpa: 0x1001, size: 4K}", "layout.yaml:2: regions[0].gpa: 0x1001 is not 4 KiB aligned"},
		{"regions:\n  - {size: 4K}", "regions[0].gpa: required"},
		{"regions:\n  - {gpa: 0, size: 4K, file: fw.bin}", "give either file or size, not both"},
		{"regions:\n  - {gpa: 0}", "needs file or size"},
		{"regions:\n  - {gpa: 0, size: 4K, fill: 256}", "256 is not a byte value"},
		{"regions:\n  - {gpa: 0, file: fw.bin, fill: 1}", "fill: goes with size"},
		{"regions:\n  - {gpa: 0, file: nope.bin}", "regions[0].file: stat"},
		{"regions:\n  - {gpa: 0, size: 0}", "size: must be positive"},
		{"regions:\n  - {gpa: 0, size: 8K}\n  - {gpa: 4K, size: 4K}", "layout.yaml:3: regions[1]: overlaps regions[0]"},
		{"regions:\n  - {gpa: 0x7FFFFFFFF000, size: 8K}", "beyond the private GPA space"},
		{"regions:\n  - {gpa: 0, size: 4K, colour: red}", "layout.yaml:2: regions[0].colour: unknown key; known keys here: file, fill, gpa, measure, size"},
		{"regions:\n  - {gpa: 0, size: 4K, gpa: 4K}", "layout.yaml:2: regions[0].gpa: duplicate key (first at line 2)"},
		{"regions: []\nregions: []", "layout.yaml:2: regions: duplicate key (first at line 1)"},
		{"regions:\n  - {gpa: 0, size: 4K, fill: x}", "regions[0].fill: want an integer (a byte, 0 to 255)"},
		{"regions:\n  - [1]", "regions[0]: want a mapping of file, fill, gpa, measure, size, got a list"},
		{"regions: []\n---\nregions: []", "more than one YAML document"},
		{"regions:\n  - {gpa: 12Q, size: 4K}", "not a decimal, 0x-hex or K/M/G/T-suffixed number"},
		{"regions:\n  - {gpa: 0, size: 4K, measure: maybe}", `layout.yaml:2: regions[0].measure: want true or false, got "maybe"`},
		{"regions: 3", "layout.yaml:1: regions: want a list of regions, got a value"},
	}
	for _, c := range cases {
		p := write(t, dir, "layout.yaml", c.body)
		_, err := Load(p)
		var ie *InputError
		if !errors.As(err, &ie) {
			t.Errorf("%q: error %v is not an InputError", c.body, err)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant %q", c.body, err, c.want)
		}
	}
}

// A firmware file of two pages and a part, and a 3-byte unmeasured region:
// the partial pages are padded with zeros, the MRTD is the hand-computed
// one.
func TestPartialPagesMatchHandVector(t *testing.T) {
	dir := t.TempDir()
	fw := strings.Repeat("TDVF", 2048+100)
	write(t, dir, "fw.bin", fw)
	write(t, dir, "small.bin", "\x01\x02\x03")
	l, err := Load(write(t, dir, "layout.yaml", `
regions:
  - {gpa: 0xFF800000, file: fw.bin, measure: true}
  - {gpa: 0x800000, file: small.bin}
`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Compute(l)
	if err != nil {
		t.Fatal(err)
	}
	want := mrtdvec.Hand([]mrtdvec.Region{{GPA: 0xFF800000, Data: []byte(fw), Measure: true},
		{GPA: 0x800000, Data: []byte{1, 2, 3}}})
	if Hex(got) != Hex(want) {
		t.Fatalf("MRTD %s, want %s", Hex(got), Hex(want))
	}
}
