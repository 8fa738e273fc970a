package scenario

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/tdvf"
	"github.com/tdxsim/tdxsim/tdvf/tdvftest"
	"github.com/tdxsim/tdxsim/vmm"
)

// debianOVMF is the firmware examples/firmware-ovmf.yaml names (Debian's
// ovmf package).
const debianOVMF = "/usr/share/ovmf/OVMF.fd"

// loadExample loads an example, skipping the test when a file it needs
// is absent (the OVMF example on a machine without the ovmf package).
func loadExample(t *testing.T, p string) *File {
	t.Helper()
	f, err := Load(p)
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("%v: install Debian's ovmf package (apt-get install ovmf) to run this example", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// writeGolden writes the synthetic TDVF image and, beside it, the OVMF
// example with its firmware replaced by the image (a relative path, so
// the scenario's directory anchors it). It returns the scenario's path.
func writeGolden(t *testing.T, img []byte) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "golden.fd"), img, 0o644); err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile("../examples/firmware-ovmf.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(text, []byte("firmware: "+debianOVMF)) {
		t.Fatalf("examples/firmware-ovmf.yaml does not name %s", debianOVMF)
	}
	p := filepath.Join(dir, "firmware.yaml")
	if err := os.WriteFile(p, bytes.ReplaceAll(text, []byte("firmware: "+debianOVMF), []byte("firmware: golden.fd")), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// runFirmware runs a firmware scenario and checks what a firmware build
// must show: the MRTD `tdxsim mrtd --firmware` computes for the TD's
// memory (vmm.FirmwareMRTD), the sections in the report and its text, a
// clean run.
func runFirmware(t *testing.T, p string) string {
	t.Helper()
	f, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(f, Options{})
	var text bytes.Buffer
	r.WriteText(&text)
	if err != nil || r.Failed() {
		t.Fatalf("%v\n%s", err, text.String())
	}
	fw := f.firmwareOf(0)
	want, err := vmm.FirmwareMRTD(fw.fw, vmm.FirmwareOptions{MemBytes: uint64(f.TDs[0].Memory)})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.MRTDs[f.TDs[0].Name]; got != hex.EncodeToString(want.MRTD) {
		t.Fatalf("report MRTD %s, mrtd --firmware %x", got, want.MRTD)
	}
	secs := r.TDs[0].FirmwareSections
	if len(secs) != len(fw.fw.Sections) || r.TDs[0].Firmware != f.TDs[0].Firmware {
		t.Fatalf("report: firmware %q, sections %+v", r.TDs[0].Firmware, secs)
	}
	var added, measured uint64
	for i, s := range secs {
		w := want.Sections[i]
		if s.Type != w.Type.String() || s.GPA != w.GPA || s.PagesAdded != w.PagesAdded || s.PagesMeasured != w.PagesMeasured {
			t.Errorf("section %d: report %+v, mrtd --firmware %+v", i, s, w)
		}
		added += s.PagesAdded
		measured += s.PagesMeasured
	}
	if r.Seamcalls["TDH.MEM.PAGE.ADD"] != added || r.Seamcalls["TDH.MR.EXTEND"] != 16*measured {
		t.Errorf("PAGE.ADD %d, MR.EXTEND %d; the sections add %d pages and measure %d", r.Seamcalls["TDH.MEM.PAGE.ADD"], r.Seamcalls["TDH.MR.EXTEND"], added, measured)
	}
	if !strings.Contains(text.String(), "Build of "+f.TDs[0].Name+" from firmware") || !strings.Contains(text.String(), "pages measured") {
		t.Errorf("the text report does not list the firmware sections:\n%s", text.String())
	}
	return r.MRTDs[f.TDs[0].Name]
}

// The OVMF example, on the synthetic golden image: its MRTD is the one
// vmm pins for it (hand computed there).
func TestFirmwareGolden(t *testing.T) {
	const goldenQEMU = "ecb0c67c40833ba71ce1b30b16842f4ab4654155677469000838b713d07e9cc41e6934dbfdf6092b7d4990f0814c3974"
	if got := runFirmware(t, writeGolden(t, tdvftest.Golden().Build())); got != goldenQEMU {
		t.Errorf("MRTD %s, golden %s", got, goldenQEMU)
	}
}

// The OVMF example itself, where Debian's OVMF is installed.
func TestFirmwareDebianOVMF(t *testing.T) {
	if _, err := os.Stat(debianOVMF); errors.Is(err, fs.ErrNotExist) {
		t.Skipf("%s is absent: install Debian's ovmf package (apt-get install ovmf) to build a TD from real firmware", debianOVMF)
	}
	t.Logf("MRTD %s", runFirmware(t, "../examples/firmware-ovmf.yaml"))
}

// The guest's RAM is QEMU's RAM, without the flash; the sections in RAM
// are never accepted again.
func TestFirmwareGuestRAM(t *testing.T) {
	f, err := Load(writeGolden(t, tdvftest.Golden().Build()))
	if err != nil {
		t.Fatal(err)
	}
	if m := f.memslots(0); len(m) != 2 || m[1].GPA != 4<<30-2<<20 || !f.isRAMSlot(0, 0) || f.isRAMSlot(0, 1) || len(f.TDs[0].Memslots) != 0 {
		t.Fatalf("memslots %+v (file's %+v)", m, f.TDs[0].Memslots)
	}
	r, err := Start(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	g := r.rn.tds[0].g
	if n := g.RAMBytes(); n != uint64(f.TDs[0].Memory) {
		t.Errorf("guest RAM %#x, the TD's memory %#x", n, uint64(f.TDs[0].Memory))
	}
	if g.InRAM(4<<30-2<<20, 4096) {
		t.Error("the firmware's flash is guest RAM")
	}
	if _, err := r.Report(); err != nil {
		t.Fatal(err)
	}
}

// A bad firmware is one line naming the file, the line, the field and
// what is wrong where, before anything runs.
func TestFirmwareBadInput(t *testing.T) {
	dir := t.TempDir()
	good := tdvftest.Golden().Build()
	damaged := append([]byte(nil), good...)
	copy(damaged[0xf000:], "XDVF")
	for name, img := range map[string][]byte{"good.fd": good, "damaged.fd": damaged} {
		if err := os.WriteFile(filepath.Join(dir, name), img, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		rule, text, want string
		is               any
	}{
		{"missing", "tds:\n  - memory: 64M\n    firmware: none.fd\n", "s.yaml:3: tds[0].firmware: open " + filepath.Join(dir, "none.fd") + ": no such file", fs.ErrNotExist},
		{"damaged", "tds:\n  - memory: 64M\n    firmware: damaged.fd\n", `s.yaml:3: tds[0].firmware: ` + filepath.Join(dir, "damaged.fd") + `: offset 0xf000: TDVF metadata signature: "XDVF": want "TDVF"`, new(*tdvf.FormatError)},
		{"too little memory", "tds:\n  - memory: 8M\n    firmware: good.fd\n", "s.yaml:3: tds[0].firmware: " + filepath.Join(dir, "good.fd") + " with memory 8.00 MiB: vmm: firmware section 2 (TD_HOB) [0x800000, 0x801000) is not inside the TD's RAM", nil},
		{"with image", "tds:\n  - memory: 64M\n    firmware: good.fd\n    image: [{gpa: 0, size: 4K}]\n", "s.yaml:3: tds[0].firmware: goes without image", nil},
		{"with memslots", "tds:\n  - firmware: good.fd\n    memslots: [{gpa: 0, size: 64M}]\n", "s.yaml:2: tds[0].firmware: goes without memslots", nil},
		{"flash slot deleted", "tds:\n  - memory: 64M\n    firmware: good.fd\ntimeline:\n  - memslot_delete: {slot: 1}\n", "timeline[0].memslot_delete.slot: 1 is the firmware's flash of td0, not RAM", nil},
	} {
		t.Run(c.rule, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "s.yaml"), []byte(c.text))
			var ie *InputError
			if err == nil || !errors.As(err, &ie) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v\nwant an *InputError on one line containing %q", err, c.want)
			}
			switch is := c.is.(type) {
			case error:
				if !errors.Is(err, is) {
					t.Errorf("%v is not %v", err, is)
				}
			case **tdvf.FormatError:
				if !errors.As(err, is) {
					t.Errorf("%v wraps no *tdvf.FormatError", err)
				}
			}
		})
	}
}

// A firmware scenario writes out and reads back the same: the memslots
// QEMU's layout gives it stay out of the file.
func TestFirmwareMarshal(t *testing.T) {
	f, err := Load(writeGolden(t, tdvftest.Golden().Build()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Marshal(&f.Scenario)
	if err != nil || bytes.Contains(b, []byte("memslots")) || !bytes.Contains(b, []byte("firmware: golden.fd")) {
		t.Fatalf("%v\n%s", err, b)
	}
	if _, err := Parse(filepath.Join(filepath.Dir(f.Path), "again.yaml"), b); err != nil {
		t.Fatal(err)
	}
}

// Where Debian's OVMF is absent the example tests skip the OVMF example
// instead of failing: shown here with a firmware path that never exists.
func TestFirmwareAbsentSkips(t *testing.T) {
	text, err := os.ReadFile("../examples/firmware-ovmf.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "absent.yaml")
	if err := os.WriteFile(p, bytes.ReplaceAll(text, []byte(debianOVMF), []byte("/nonexistent/OVMF.fd")), 0o644); err != nil {
		t.Fatal(err)
	}
	skipped := false
	t.Run("example", func(st *testing.T) {
		defer func() { skipped = st.Skipped() }()
		loadExample(st, p)
	})
	if !skipped {
		t.Error("an example whose firmware is absent was not skipped")
	}
}
