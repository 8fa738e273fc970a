package tdvf_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/tdvf"
	"github.com/tdxsim/tdxsim/tdvf/tdvftest"
)

func TestParseGolden(t *testing.T) {
	im := tdvftest.Golden()
	fw, err := tdvf.Parse(im.Build())
	if err != nil {
		t.Fatal(err)
	}
	if fw.MetadataOffset != int64(im.MetadataAt) || len(fw.Sections) != len(im.Sections) {
		t.Fatalf("metadata at %#x with %d sections, want %#x with %d", fw.MetadataOffset, len(fw.Sections), im.MetadataAt, len(im.Sections))
	}
	for i, s := range fw.Sections {
		w := im.Sections[i]
		if s.DataOffset != w.DataOffset || s.RawDataSize != w.RawDataSize || s.GPA != w.GPA || s.Size != w.Size ||
			uint32(s.Type) != w.Type || uint32(s.Attributes) != w.Attributes || s.EntryOffset != int64(im.MetadataAt+16+32*i) {
			t.Errorf("section %d: %+v, want %+v", i, s, w)
		}
	}
	if h := fw.HOB(); h.GPA != 0x800000 {
		t.Errorf("HOB at %#x", h.GPA)
	}
	if got := fw.Sections[4]; got.Attributes != tdvf.PageAug || got.Attributes.String() != "PAGE.AUG" {
		t.Errorf("PAGE.AUG section: attributes %v", got.Attributes)
	}
	if got := fw.Sections[0]; got.Attributes != tdvf.MRExtend || len(fw.Data(got)) != 0xe000 || len(fw.RawData(got)) != 0xd000 {
		t.Errorf("BFV: attributes %v, %d bytes, %d raw", got.Attributes, len(fw.Data(got)), len(fw.RawData(got)))
	}
}

// TestDamaged breaks one field at a time and checks the error names it
// and its file offset.
func TestDamaged(t *testing.T) {
	im := tdvftest.Golden()
	md := im.MetadataAt
	entry := func(i, field int) int { return md + 16 + 32*i + field }
	put32 := func(b []byte, at int, v uint32) { binary.LittleEndian.PutUint32(b[at:], v) }
	put64 := func(b []byte, at int, v uint64) { binary.LittleEndian.PutUint64(b[at:], v) }
	size := im.Size
	for _, c := range []struct {
		name   string
		breakf func(b []byte) []byte
		offset int
		want   string
	}{
		{"not 64K", func(b []byte) []byte { return b[:len(b)-4096] }, 0, "whole 64 KiB"},
		{"empty", func(b []byte) []byte { return nil }, 0, "whole 64 KiB"},
		{"no footer", func(b []byte) []byte { b[size-48] ^= 1; return b }, size - 48, "not an OVMF image"},
		{"table too long", func(b []byte) []byte { binary.LittleEndian.PutUint16(b[size-50:], 0xffff); return b }, size - 50, "OVMF table length"},
		{"entry length 0", func(b []byte) []byte { binary.LittleEndian.PutUint16(b[size-50-18:], 0); return b }, size - 50 - 18, "entry length"},
		{"no metadata entry", func(b []byte) []byte { b[size-50-16] ^= 1; return b }, size - 50, "no TDX metadata offset entry"},
		{"offset past start", func(b []byte) []byte { put32(b, size-50-22, uint32(size+1)); return b }, size - 50 - 22, "outside the image"},
		{"offset zero", func(b []byte) []byte { put32(b, size-50-22, 0); return b }, size - 50 - 22, "outside the image"},
		{"signature", func(b []byte) []byte { b[md] = 'X'; return b }, md, "want \"TDVF\""},
		{"length past end", func(b []byte) []byte { put32(b, md+4, 0x10000); return b }, md + 4, "past the end"},
		{"version", func(b []byte) []byte { put32(b, md+8, 2); return b }, md + 8, "only version 1"},
		{"one section", func(b []byte) []byte { put32(b, md+12, 1); return b }, md + 12, "at least 2"},
		{"length mismatch", func(b []byte) []byte { put32(b, md+12, 4); return b }, md + 4, "4 sections need"},
		{"raw > size", func(b []byte) []byte { put32(b, entry(1, 4), 0x3000); return b }, entry(1, 16), "smaller than RawDataSize"},
		{"gpa unaligned", func(b []byte) []byte { put64(b, entry(2, 8), 0x800100); return b }, entry(2, 8), "not 4 KiB aligned"},
		{"size unaligned", func(b []byte) []byte { put64(b, entry(2, 16), 0x1001); return b }, entry(2, 16), "not 4 KiB aligned"},
		{"BFV without data", func(b []byte) []byte { put32(b, entry(0, 4), 0); return b }, entry(0, 4), "RawDataSize is 0"},
		{"HOB with data", func(b []byte) []byte { put32(b, entry(2, 4), 0x10); return b }, entry(2, 4), "carries no data"},
		{"TempMem measured", func(b []byte) []byte { put32(b, entry(3, 28), 1); return b }, entry(3, 28), "must not be measured"},
		{"Payload", func(b []byte) []byte { put32(b, entry(3, 24), 5); return b }, entry(3, 24), "type 5 is not one QEMU builds"},
		{"empty section", func(b []byte) []byte { put64(b, entry(3, 16), 0); return b }, entry(3, 16), "MemoryDataSize is 0"},
		{"shared GPA", func(b []byte) []byte { put64(b, entry(3, 8), 1<<47); return b }, entry(3, 8), "private GPA space"},
		{"data unaligned", func(b []byte) []byte { put32(b, entry(0, 0), 0x2100); return b }, entry(0, 0), "DataOffset 0x2100 is not 4 KiB aligned"},
		{"data past end", func(b []byte) []byte { put32(b, entry(0, 0), 0x4000); return b }, entry(0, 0), "past the end of the image"},
		{"overlap", func(b []byte) []byte { put64(b, entry(3, 8), 0x800000); return b }, entry(3, 8), "overlaps section 2"},
		{"no HOB", func(b []byte) []byte { put32(b, entry(2, 24), 3); return b }, md, "no TD_HOB"},
	} {
		_, err := tdvf.Parse(c.breakf(im.Build()))
		var fe *tdvf.FormatError
		if !errors.As(err, &fe) {
			t.Errorf("%s: %v, want a FormatError", c.name, err)
			continue
		}
		if fe.Offset != int64(c.offset) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v (offset %#x), want offset %#x and %q", c.name, err, fe.Offset, c.offset, c.want)
		}
	}
}

func TestHOB(t *testing.T) {
	ram := []tdvf.RAMEntry{{GPA: 0, Length: 0x800000}, {GPA: 0x800000, Length: 0x1000, Added: true}, {GPA: 0x801000, Length: 0x7ff000}}
	b, err := tdvf.BuildHOB(0x800000, 0x1000, ram)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if len(b) != 56+3*48+8 || le.Uint16(b[0:]) != 1 || le.Uint16(b[2:]) != 56 || le.Uint32(b[8:]) != 9 ||
		le.Uint64(b[48:]) != 0x800000+uint64(len(b)) {
		t.Fatalf("handoff table: % x", b[:56])
	}
	for i, e := range ram {
		d := b[56+48*i:]
		typ := uint32(7)
		if e.Added {
			typ = 0
		}
		if le.Uint16(d) != 3 || le.Uint16(d[2:]) != 48 || le.Uint32(d[24:]) != typ || le.Uint32(d[28:]) != 7 ||
			le.Uint64(d[32:]) != e.GPA || le.Uint64(d[40:]) != e.Length {
			t.Errorf("descriptor %d: % x", i, d[:48])
		}
	}
	if end := b[len(b)-8:]; le.Uint16(end) != 0xffff || le.Uint16(end[2:]) != 8 {
		t.Errorf("end of list: % x", end)
	}
	if _, err := tdvf.BuildHOB(0, 100, ram); err == nil || !strings.Contains(err.Error(), "overrun") {
		t.Errorf("small section: %v", err)
	}
}

// FuzzParse: no input panics, and whatever parses satisfies the checks.
func FuzzParse(f *testing.F) {
	f.Add(tdvftest.Golden().Build())
	small := tdvftest.Golden()
	f.Add(small.Build()[:4096])
	f.Fuzz(func(t *testing.T, img []byte) {
		// Fuzzed inputs are short; stretch them to 64 KiB with the input
		// at the end, where the table and usually the metadata live.
		if len(img) < 64<<10 && len(img) > 0 {
			pad := make([]byte, 64<<10)
			copy(pad[len(pad)-len(img):], img)
			img = pad
		}
		fw, err := tdvf.Parse(img)
		if err != nil {
			var fe *tdvf.FormatError
			if !errors.As(err, &fe) || fe.Offset < 0 || fe.Offset >= max(int64(len(img)), 1) {
				t.Fatalf("error %v: not a FormatError inside the image", err)
			}
			return
		}
		if len(fw.Sections) < 2 || fw.HOB().Type != tdvf.TDHOB {
			t.Fatalf("parsed %d sections, HOB %v", len(fw.Sections), fw.HOB())
		}
		for _, s := range fw.Sections {
			if s.GPA%4096 != 0 || s.Size%4096 != 0 || s.Size == 0 || s.DataOffset%4096 != 0 && s.FromImage() || uint64(len(fw.Data(s))) != map[bool]uint64{true: s.Size}[s.FromImage()] {
				t.Fatalf("bad section accepted: %+v", s)
			}
		}
	})
}
