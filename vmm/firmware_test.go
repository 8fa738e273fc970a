package vmm

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/internal/mrtdvec"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdvf"
	"github.com/tdxsim/tdxsim/tdvf/tdvftest"
)

// goldenMRTD is the MRTD of tdvftest.Golden() as each VMM builds it:
// hand-computed below and through the build path, pinned so neither can
// drift unnoticed. They differ because the image has a PAGE.AUG section
// and a BFV whose last page is past its RawDataSize.
var goldenMRTD = map[FirmwareVMM]string{
	QEMU:            "ecb0c67c40833ba71ce1b30b16842f4ab4654155677469000838b713d07e9cc41e6934dbfdf6092b7d4990f0814c3974",
	CloudHypervisor: "f622cf4d4e1bdf31af869961c3a4a022bc272ddcec55c93d907a83d7d172cd446264932ff1f4498d64926149215ac1ce",
	TDVFSpec:        "19e34d4223c9ea3a0bcc468bcee92009c50f14884a2ac003a84409fa451d6a0b0bfbe841e5a3958ea65b7e68abe1aad0",
}

// handMRTD computes an MRTD from raw section entries with crypto/sha512
// alone, from the TDX module's definition: per 4 KiB page TDH.MEM.PAGE.ADD
// extends a 128-byte block ("MEM.PAGE.ADD" zero-padded to 16 bytes, the
// GPA little-endian, zeros); a measured page then gets, per 256-byte chunk,
// TDH.MR.EXTEND's block ("MR.EXTEND", the chunk's GPA) and the chunk. The
// sections go in metadata order. What is added, measured and copied is
// each VMM's rule, restated here: QEMU adds all, measures MR.EXTEND and
// copies the image for the whole section; cloud-hypervisor measures only
// attributes == MR.EXTEND and copies RawDataSize bytes (zeros after);
// the TDVF design guide's reading leaves PAGE.AUG sections out.
func handMRTD(img []byte, secs []tdvftest.Section, vmmKind FirmwareVMM) []byte {
	h := sha512.New384()
	block := func(name string, gpa uint64) {
		var b [128]byte
		copy(b[:], name)
		binary.LittleEndian.PutUint64(b[16:], gpa)
		h.Write(b[:])
	}
	for _, s := range secs {
		if vmmKind == TDVFSpec && s.Attributes&2 != 0 {
			continue
		}
		measured := s.Attributes&1 != 0
		if vmmKind == CloudHypervisor {
			measured = s.Attributes == 1
		}
		for p := uint64(0); p < s.Size/4096; p++ {
			gpa := s.GPA + p*4096
			block("MEM.PAGE.ADD", gpa)
			if !measured {
				continue
			}
			for c := uint64(0); c < 4096; c += 256 {
				block("MR.EXTEND", gpa+c)
				chunk := make([]byte, 256)
				for k := range chunk {
					if x := p*4096 + c + uint64(k); vmmKind != CloudHypervisor || x < uint64(s.RawDataSize) {
						chunk[k] = img[uint64(s.DataOffset)+x]
					}
				}
				h.Write(chunk)
			}
		}
	}
	return h.Sum(nil)
}

// golden is tdvftest.Golden(): the image, its bytes and their parse.
func golden(t *testing.T) (tdvftest.Image, []byte, *tdvf.Firmware) {
	t.Helper()
	im := tdvftest.Golden()
	img := im.Build()
	fw, err := tdvf.Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	return im, img, fw
}

func TestFirmwareGolden(t *testing.T) {
	im, img, fw := golden(t)
	wantPages := map[FirmwareVMM][]struct{ added, measured uint64 }{
		QEMU:            {{14, 14}, {2, 0}, {1, 0}, {2, 0}, {1, 0}},
		CloudHypervisor: {{14, 14}, {2, 0}, {1, 0}, {2, 0}, {1, 0}},
		TDVFSpec:        {{14, 14}, {2, 0}, {1, 0}, {2, 0}, {0, 0}},
	}
	seen := map[string]FirmwareVMM{}
	for _, v := range []FirmwareVMM{QEMU, CloudHypervisor, TDVFSpec} {
		res, err := FirmwareMRTD(fw, FirmwareOptions{MemBytes: 64 << 20, VMM: v})
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		hand := handMRTD(img, im.Sections, v)
		var vec []mrtdvec.Region
		for _, s := range fw.Sections {
			if v.Adds(s) {
				vec = append(vec, mrtdvec.Region{GPA: s.GPA, Data: v.source(fw, s, nil), Measure: v.Measures(s)})
			}
		}
		got := hex.EncodeToString(res.MRTD)
		if !bytes.Equal(res.MRTD, hand) || !bytes.Equal(hand, mrtdvec.Hand(vec)) || got != goldenMRTD[v] {
			t.Errorf("%s: MRTD: build path %s, by hand %x, mrtdvec %x, golden %s", v, got, hand, mrtdvec.Hand(vec), goldenMRTD[v])
		}
		if o, dup := seen[got]; dup {
			t.Errorf("%s and %s give the same MRTD for an image where they differ", v, o)
		}
		seen[got] = v
		for i, l := range res.Sections {
			if w := wantPages[v][i]; l.PagesAdded != w.added || l.PagesMeasured != w.measured {
				t.Errorf("%s: section %d (%s): %d added, %d measured, want %+v", v, i, l.Type, l.PagesAdded, l.PagesMeasured, w)
			}
		}
		// RAM below 4 GiB, then one 2 MiB slot under 4 GiB for the image.
		if len(res.Slots) != 2 || res.Slots[1] != (Slot{GPA: 4<<30 - 2<<20, Size: 2 << 20}) {
			t.Errorf("%s: slots %+v", v, res.Slots)
		}
		// The HOB is not measured: RAM split below and above 4 GiB (more
		// entries in the HOB) gives the same MRTD.
		big, err := FirmwareMRTD(fw, FirmwareOptions{MemBytes: 3 << 30, VMM: v})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(big.MRTD, res.MRTD) || len(big.Slots) != 3 {
			t.Errorf("%s: 3 GiB TD: MRTD %x, slots %+v", v, big.MRTD, big.Slots)
		}
	}
}

func TestFirmwareLayoutErrors(t *testing.T) {
	_, _, fw := golden(t)
	// 8 MiB of RAM ends where the TD_HOB starts.
	if _, err := FirmwareMRTD(fw, FirmwareOptions{MemBytes: 8 << 20}); !errors.Is(err, ErrFirmwareLayout) {
		t.Errorf("TD_HOB outside RAM: %v, want ErrFirmwareLayout", err)
	}
	if _, err := FirmwareMRTD(fw, FirmwareOptions{MemBytes: 3 << 20 / 2}); !errors.Is(err, ErrFirmwareLayout) {
		t.Errorf("memory not 2 MiB: %v", err)
	}
}

func TestHOBEntries(t *testing.T) {
	// QEMU's tdx_accept_ram_range(): the accepted middle replaces the
	// entry, head and tail are appended.
	e := []tdvf.RAMEntry{{GPA: 0, Length: 16 << 20}, {GPA: 4 << 30, Length: 1 << 30}}
	e, err := acceptRAMRange(e, 8<<20, 4096)
	if err != nil {
		t.Fatal(err)
	}
	want := []tdvf.RAMEntry{{GPA: 8 << 20, Length: 4096, Added: true}, {GPA: 4 << 30, Length: 1 << 30}, {GPA: 0, Length: 8 << 20}, {GPA: 8<<20 + 4096, Length: 8<<20 - 4096}}
	if len(e) != len(want) {
		t.Fatalf("entries %+v", e)
	}
	for i := range want {
		if e[i] != want[i] {
			t.Fatalf("entries %+v, want %+v", e, want)
		}
	}
	if _, err := acceptRAMRange(e, 16<<20-4096, 8192); err == nil {
		t.Error("a range across two entries was accepted")
	}
}

// debianOVMF is the file Debian's ovmf package ships with TDX metadata.
const debianOVMF = "/usr/share/ovmf/OVMF.fd"

// debianKnown pins the MRTD of the OVMF.fd of one package version
// (2022.11-6+deb12u2), by the file's SHA-256.
var debianKnown = map[string]string{
	"7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773": "4c7206f0f483c524f12c366c711e9049030a8d47c471ee5aa9c4999a08de4057fb887fed0744d5631a212967fb231c47",
}

// TestDebianOVMF builds a TD from Debian's OVMF and checks the section
// table against the file's metadata read here with encoding/binary (not
// by tdvf), and the MRTD against the hand computation over those entries.
func TestDebianOVMF(t *testing.T) {
	img, err := os.ReadFile(debianOVMF)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s is absent: install Debian's ovmf package (apt-get install ovmf; .ci/run does) to test with real firmware", debianOVMF)
	}
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	n := len(img)
	// The GUIDed table ends with its length and the footer GUID 48 bytes
	// before the end; the TDX metadata offset entry is e47a6535-...; its
	// 4-byte value is the metadata's distance from the end.
	footer := []byte{0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d}
	mdGUID := []byte{0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2}
	if !bytes.Equal(img[n-48:n-32], footer) {
		t.Fatalf("%s has no OVMF table footer", debianOVMF)
	}
	md := -1
	for end, stop := n-50, n-48-int(le.Uint16(img[n-50:])); end > stop; end -= int(le.Uint16(img[end-18:])) {
		if bytes.Equal(img[end-16:end], mdGUID) {
			md = n - int(le.Uint32(img[end-int(le.Uint16(img[end-18:])):]))
			break
		}
	}
	if md < 0 || string(img[md:md+4]) != "TDVF" {
		t.Fatalf("%s: no TDVF metadata found independently (at %d)", debianOVMF, md)
	}
	var secs []tdvftest.Section
	for i := range int(le.Uint32(img[md+12:])) {
		e := img[md+16+32*i:]
		secs = append(secs, tdvftest.Section{DataOffset: le.Uint32(e), RawDataSize: le.Uint32(e[4:]), GPA: le.Uint64(e[8:]),
			Size: le.Uint64(e[16:]), Type: le.Uint32(e[24:]), Attributes: le.Uint32(e[28:])})
	}

	fw, err := tdvf.Load(debianOVMF)
	if err != nil {
		t.Fatal(err)
	}
	res, err := FirmwareMRTD(fw, FirmwareOptions{MemBytes: 2 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Sections) != len(secs) {
		t.Fatalf("%d sections built, the file has %d", len(res.Sections), len(secs))
	}
	for i, l := range res.Sections {
		w := secs[i]
		added, measured := w.Size/4096, w.Size/4096 // QEMU adds every section
		if w.Attributes&1 == 0 {
			measured = 0
		}
		if l.DataOffset != w.DataOffset || l.RawDataSize != w.RawDataSize || l.GPA != w.GPA || l.Size != w.Size ||
			uint32(l.Type) != w.Type || uint32(l.Attributes) != w.Attributes || l.PagesAdded != added || l.PagesMeasured != measured {
			t.Errorf("section %d: built %+v, file %+v", i, l, w)
		}
		t.Logf("section %d: %-7s GPA %#x size %#x attributes %-9s pages added %d measured %d", i, l.Type, l.GPA, l.Size, l.Attributes, l.PagesAdded, l.PagesMeasured)
	}
	got := hex.EncodeToString(res.MRTD)
	if hand := hex.EncodeToString(handMRTD(img, secs, QEMU)); got != hand {
		t.Fatalf("MRTD: build path %s, by hand %s", got, hand)
	}
	// Its sections carry their whole size in the file and no PAGE.AUG:
	// every VMM builds the same TD.
	for _, v := range []FirmwareVMM{CloudHypervisor, TDVFSpec} {
		if r, err := FirmwareMRTD(fw, FirmwareOptions{MemBytes: 2 << 30, VMM: v}); err != nil || !bytes.Equal(r.MRTD, res.MRTD) {
			t.Errorf("%s: MRTD %x (%v), QEMU's %s", v, r.MRTD, err, got)
		}
	}
	sum := sha256.Sum256(img)
	if want, ok := debianKnown[hex.EncodeToString(sum[:])]; ok && got != want {
		t.Errorf("MRTD %s, pinned %s", got, want)
	}
	t.Logf("MRTD of %s (sha256 %x): %s", debianOVMF, sum, got)
}

// TestFirmwareMemory checks what the TD holds after LoadFirmware, read from
// the pages the Secure EPT maps: the BFV's page past RawDataSize from the
// image, the HOB list QEMU writes at the TD_HOB, TempMem zero.
func TestFirmwareMemory(t *testing.T) {
	_, img, fw := golden(t)
	ram := QEMURAM(64 << 20)
	slots, err := FirmwareSlots(fw, ram)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{MemBytes: 64<<20 + 2<<20, Slots: slots, VCPUs: 1}
	host, err := NewHost(HostConfig{Bytes: 2 << 30, TDs: []Config{cfg}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	page := func(m *VMM, gpa uint64) []byte {
		e, ok := host.Mod.Lookup(m.TD.TDR(), addr.GPA(gpa))
		if !ok || e.Level != addr.Level4K {
			t.Fatalf("GPA %#x is not mapped at 4K: %+v", gpa, e)
		}
		b := host.Mem.Bytes(e.HPA.PFN())
		if b == nil {
			b = make([]byte, 4096) // only a zero tag: a zeroed page
		}
		return b
	}
	s := sched.New(sched.Deterministic, 0, nil)
	s.Go("vmm", func(th *sched.Thread) {
		m, err := Create(th, host, cfg)
		if err != nil {
			t.Error(err)
			return
		}
		defer func() {
			if err := m.Teardown(th); err != nil {
				t.Error(err)
			}
		}()
		if _, err := m.LoadFirmware(th, fw, ram); err != nil {
			t.Error(err)
			return
		}
		bfv := fw.Sections[0]
		last := bfv.GPA + bfv.Size - 4096
		if got, want := page(m, last), img[uint64(bfv.DataOffset)+bfv.Size-4096:][:4096]; !bytes.Equal(got, want) {
			t.Errorf("BFV's last page (past RawDataSize) differs from the image")
		}
		// RAM [0, 64M) split around the TD_HOB [8M, 8M+4K) and the TempMem
		// [8M+4K, 8M+12K); the PAGE.AUG TempMem is added by QEMU too.
		type r = tdvf.RAMEntry
		entries := []tdvf.RAMEntry{r{GPA: 0, Length: 0x800000}, r{GPA: 0x800000, Length: 0x1000, Added: true},
			r{GPA: 0x801000, Length: 0x2000, Added: true}, r{GPA: 0x803000, Length: 0x900000 - 0x803000},
			r{GPA: 0x900000, Length: 0x1000, Added: true}, r{GPA: 0x901000, Length: 64<<20 - 0x901000}}
		want, err := tdvf.BuildHOB(0x800000, 0x1000, entries)
		if err != nil {
			t.Error(err)
			return
		}
		if got := page(m, 0x800000); !bytes.Equal(got[:len(want)], want) || !bytes.Equal(got[len(want):], make([]byte, 4096-len(want))) {
			t.Errorf("TD_HOB page:\n% x\nwant\n% x", got[:len(want)], want)
		}
		if got := page(m, 0x802000); !bytes.Equal(got, make([]byte, 4096)) {
			t.Errorf("TempMem page is not zero")
		}
	})
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
}
