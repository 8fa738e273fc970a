package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestRunDefaultJSON(t *testing.T) {
	code, out, errs := run("run", "--json", "--hugepages", "off", "--accept", "4M", "--convert", "1M", "--punch", "1M")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r struct {
		Seamcalls map[string]uint64 `json:"seamcalls"`
		MRTD      string            `json:"mrtd"`
		Mappings  map[string]int64  `json:"mappings_peak"`
		Teardown  struct {
			Leaked    int64 `json:"leaked_pages"`
			Reclaimed int64 `json:"sept_pages_reclaimed"`
		} `json:"teardown"`
		Violations []string `json:"violations"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	// 1024 pages accepted, 256 of them converted and accepted again; the
	// 512-page image and every AUGed page are removed once.
	if r.Seamcalls["TDH.MEM.PAGE.AUG"] != 1024+256 || r.Seamcalls["TDH.MEM.PAGE.REMOVE"] != 512+1024+256 ||
		r.Mappings["4K"] != 512+1024 || len(r.MRTD) != 96 || r.Teardown.Leaked != 0 || r.Teardown.Reclaimed == 0 || len(r.Violations) != 0 {
		t.Fatalf("report %+v", r)
	}
	// Same seed, same report, byte for byte.
	_, out2, _ := run("run", "--json", "--hugepages", "off", "--accept", "4M", "--convert", "1M", "--punch", "1M")
	if out != out2 {
		t.Fatal("two runs with the same seed differ")
	}
}

func TestBadInputExits2(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("regions:\n  - {gpa: 0x10, size: 4K}\n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"run", "--vcpus", "0"}, "-vcpus 0: must be 1..256"},
		{[]string{"run", "--hugepages", "4M"}, `hugepages "4M": must be off, 2M or 1G`},
		{[]string{"run", "--max-order-from", "pfn"}, `max_order_from "pfn": must be gmem or folio`},
		{[]string{"run", "--split-order", "x"}, `-split-order "x": must be sept_first or folio_first`},
		{[]string{"run", "--accept", "4M", "--convert", "1M", "--punch", "1M"}, "punches whole 2M pages only"},
		{[]string{"run", "--accept", "5K"}, "4 KiB multiples"},
		{[]string{"run", "--mem", "3M"}, "multiple of 2M"},
		{[]string{"run", "--accept", "4M", "--convert", "4M", "--punch", "1M"}, "convert+punch <= accept"},
		{[]string{"run", "--accept", "lots"}, "invalid value"},
		{[]string{"run", "scenario.yaml"}, "not supported yet"},
		{[]string{"mrtd"}, "--layout FILE is required"},
		{[]string{"mrtd", "--layout", bad}, "bad.yaml:2: regions[0].gpa: 0x10 is not 4 KiB aligned"},
		{[]string{"mrtd", "--layout", filepath.Join(dir, "none.yaml")}, "no such file"},
	} {
		code, _, errs := run(c.args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errs, c.want)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"mrtd", "-h"}} {
		code, out, errs := run(args...)
		if code != 0 || !strings.Contains(out+errs, "usage: tdxsim") {
			t.Errorf("%v: exit %d", args, code)
		}
	}
}

func TestMRTDExample(t *testing.T) {
	code, out, errs := run("mrtd", "--layout", "../../examples/mrtd/layout.yaml", "--json")
	if code != 0 || !strings.HasPrefix(out, `{"mrtd": "`) || len(strings.TrimSpace(out)) != len(`{"mrtd": ""}`)+96 {
		t.Fatalf("exit %d out %q err %q", code, out, errs)
	}
}

// With huge pages (the default), the guest accepts 2M first: untouched
// 2 MiB ranges stay 2M, the converted 4K-aligned ones are split.
func TestRunHugePagesJSON(t *testing.T) {
	code, out, errs := run("run", "--json", "--accept", "8M", "--convert", "4K", "--punch", "0")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r struct {
		Seamcalls map[string]uint64 `json:"seamcalls"`
		Mappings  map[string]int64  `json:"mappings_peak"`
		Splits    map[string]int64  `json:"splits"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	// 8 MiB = four 2M accepts; converting the first 4K splits one of them.
	if r.Mappings["2M"] != 4 || r.Splits["2M"] != 1 || r.Seamcalls["TDH.MEM.PAGE.DEMOTE"] != 1 {
		t.Fatalf("report %+v", r)
	}
}
