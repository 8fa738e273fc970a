package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/tdvf/tdvftest"
)

// goldenFirmwareMRTD is vmm's golden MRTD of tdvftest.Golden() as QEMU
// builds it (hand computed there), goldenSpecMRTD with PAGE.AUG sections
// left out.
const (
	goldenFirmwareMRTD = "ecb0c67c40833ba71ce1b30b16842f4ab4654155677469000838b713d07e9cc41e6934dbfdf6092b7d4990f0814c3974"
	goldenSpecMRTD     = "19e34d4223c9ea3a0bcc468bcee92009c50f14884a2ac003a84409fa451d6a0b0bfbe841e5a3958ea65b7e68abe1aad0"
)

func writeFirmware(t *testing.T, img []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fw.fd")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMRTDFirmware(t *testing.T) {
	p := writeFirmware(t, tdvftest.Golden().Build())
	code, out, errs := run("mrtd", "--firmware", p)
	if code != 0 || strings.TrimSpace(out) != goldenFirmwareMRTD {
		t.Fatalf("exit %d out %q err %q", code, out, errs)
	}
	code, out, errs = run("mrtd", "--firmware", p, "--json")
	var j struct {
		MRTD     string `json:"mrtd"`
		Sections []struct {
			Type          string `json:"type"`
			GPA           uint64 `json:"gpa"`
			Attributes    string `json:"attributes"`
			PagesAdded    uint64 `json:"pages_added"`
			PagesMeasured uint64 `json:"pages_measured"`
		} `json:"sections"`
	}
	if err := json.Unmarshal([]byte(out), &j); code != 0 || err != nil {
		t.Fatalf("--json: exit %d, %v, err %q", code, err, errs)
	}
	if j.MRTD != goldenFirmwareMRTD || len(j.Sections) != 5 || j.Sections[0].Type != "BFV" || j.Sections[0].PagesMeasured != 14 ||
		j.Sections[4].Attributes != "PAGE.AUG" || j.Sections[4].PagesAdded != 1 {
		t.Errorf("--json: %+v", j)
	}
	code, out, errs = run("mrtd", "--firmware", p, "--vmm", "tdvf-spec")
	if code != 0 || strings.TrimSpace(out) != goldenSpecMRTD {
		t.Errorf("--vmm tdvf-spec: exit %d out %q err %q", code, out, errs)
	}
	code, out, _ = run("mrtd", "--firmware", p, "--sections")
	if code != 0 || !strings.Contains(out, "pages measured") || !strings.Contains(out, "TD_HOB") || !strings.HasSuffix(out, "MRTD "+goldenFirmwareMRTD+"\n") {
		t.Errorf("--sections: exit %d\n%s", code, out)
	}
}

func TestMRTDFirmwareBad(t *testing.T) {
	im := tdvftest.Golden()
	damaged := im.Build()
	damaged[im.MetadataAt] = 'X'
	short := im.Build()[:4096]
	good := writeFirmware(t, im.Build())
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"mrtd", "--firmware", writeFirmware(t, damaged)}, `offset 0xf000: TDVF metadata signature: "XDVF": want "TDVF"`},
		{[]string{"mrtd", "--firmware", writeFirmware(t, short)}, "whole 64 KiB"},
		{[]string{"mrtd", "--firmware", filepath.Join(t.TempDir(), "none.fd")}, "no such file"},
		{[]string{"mrtd", "--firmware", good, "--memory", "8M"}, "not inside the TD's RAM"},
		{[]string{"mrtd", "--firmware", good, "--memory", "lots"}, "--memory"},
		{[]string{"mrtd", "--firmware", good, "--vmm", "xen"}, "want qemu, cloud-hypervisor or tdvf-spec"},
		{[]string{"mrtd", "--firmware", good, "--layout", "x.yaml"}, "one of them"},
		{[]string{"mrtd", "--layout", "x.yaml", "--sections"}, "--sections goes with --firmware"},
	} {
		code, out, errs := run(c.args...)
		if code != 2 || out != "" || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, out %q, stderr %q; want 2 and %q", c.args, code, out, errs, c.want)
		}
	}
}

// runFirmwareScenario writes a scenario booting firmware fw with memory
// mem, runs it with `run --json` and checks its MRTD against `mrtd
// --firmware fw --memory mem`, and that the JSON lists the sections.
func runFirmwareScenario(t *testing.T, fw, mem string) string {
	t.Helper()
	p := writeScenario(t, "tds:\n  - memory: "+mem+"\n    firmware: "+fw+"\ntimeline:\n  - boot: {upfront: 64M}\n  - touch: {count: 64}\n")
	code, out, errs := run("run", "--json", p)
	var rep struct {
		MRTD string `json:"mrtd"`
		TDs  []struct {
			FirmwareSections []struct {
				Type       string `json:"type"`
				PagesAdded uint64 `json:"pages_added"`
			} `json:"firmware_sections"`
		} `json:"tds"`
	}
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil {
		t.Fatalf("run: exit %d, %v, stderr %q", code, err, errs)
	}
	code, want, errs := run("mrtd", "--firmware", fw, "--memory", mem)
	if code != 0 {
		t.Fatalf("mrtd: exit %d, stderr %q", code, errs)
	}
	if rep.MRTD != strings.TrimSpace(want) {
		t.Errorf("run's MRTD %s, mrtd --firmware --memory %s: %s", rep.MRTD, mem, want)
	}
	if len(rep.TDs) != 1 || len(rep.TDs[0].FirmwareSections) == 0 || rep.TDs[0].FirmwareSections[0].PagesAdded == 0 {
		t.Errorf("run --json: firmware_sections %+v", rep.TDs)
	}
	return rep.MRTD
}

// A scenario's firmware TD has the MRTD `mrtd --firmware` prints: on the
// synthetic golden image, and on Debian's OVMF where it is installed.
func TestRunFirmwareMRTD(t *testing.T) {
	if got := runFirmwareScenario(t, writeFirmware(t, tdvftest.Golden().Build()), "128M"); got != goldenFirmwareMRTD {
		t.Errorf("golden image: MRTD %s, want %s", got, goldenFirmwareMRTD)
	}
	const ovmf = "/usr/share/ovmf/OVMF.fd"
	if _, err := os.Stat(ovmf); err != nil {
		t.Skipf("%s is absent (%v): install Debian's ovmf package (apt-get install ovmf) to compare with real firmware", ovmf, err)
	}
	t.Logf("%s: MRTD %s", ovmf, runFirmwareScenario(t, ovmf, "3G"))
}

// A damaged or missing firmware is exit 2 with one line saying where.
func TestRunFirmwareBad(t *testing.T) {
	im := tdvftest.Golden()
	damaged := im.Build()
	damaged[im.MetadataAt] = 'X'
	for fw, want := range map[string]string{
		writeFirmware(t, damaged):             `:3: tds[0].firmware: `,
		filepath.Join(t.TempDir(), "none.fd"): "no such file",
	} {
		code, out, errs := run("run", writeScenario(t, "tds:\n  - memory: 64M\n    firmware: "+fw+"\n"))
		if code != 2 || out != "" || !strings.Contains(errs, want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%s: exit %d, out %q, stderr %q; want 2 and one line with %q", fw, code, out, errs, want)
		}
	}
}
