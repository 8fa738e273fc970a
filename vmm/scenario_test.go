package vmm_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/internal/mrtdvec"
	"github.com/tdxsim/tdxsim/internal/testkit"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/scenario"
)

// The TDs of vmm's tests are scenario files under testdata, built and run
// by package scenario through vmm, KVM's TDX code and the TDX module, the
// one way every TD of the model is built.

var seedLine = regexp.MustCompile(`(?m)^seed: \d+$`)

// runScenario runs testdata/name with the file's seed replaced by seed and
// each of set ("key: value" lines of the file) replacing the line with the
// same key; it fails t on an error the run returns.
func runScenario(t testing.TB, name string, seed uint64, set ...string) *report.Run {
	t.Helper()
	path := "testdata/" + name
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !seedLine.Match(data) {
		t.Fatalf("%s has no top-level seed line", path)
	}
	data = seedLine.ReplaceAll(data, fmt.Appendf(nil, "seed: %d", seed))
	for _, kv := range set {
		key, _, _ := strings.Cut(strings.TrimSpace(kv), ":")
		line := regexp.MustCompile(`(?m)^(\s*)` + regexp.QuoteMeta(key) + `:.*$`)
		if !line.Match(data) {
			t.Fatalf("%s has no %q line", path, key)
		}
		data = line.ReplaceAll(data, []byte("${1}"+strings.TrimSpace(kv)))
	}
	f, err := scenario.Parse(path, data)
	if err != nil {
		t.Fatal(err)
	}
	r, err := scenario.Run(f, scenario.Options{})
	if err != nil {
		t.Fatalf("%s, seed %d: %v", path, seed, err)
	}
	return r
}

// problems lists what a run's report says went wrong: a failed check or
// expectation, an early stop, anything left after teardown.
func problems(r *report.Run) []string {
	var bad []string
	bad = append(bad, r.Violations...)
	for _, e := range r.Expectations {
		if !e.OK {
			bad = append(bad, fmt.Sprintf("expectation %s: %s", e.What, e.Detail))
		}
	}
	if r.Error != "" {
		bad = append(bad, "stopped: "+r.Error)
	}
	for _, td := range r.TDs {
		if td.Bugged != "" {
			bad = append(bad, fmt.Sprintf("%s: KVM_BUG_ON: %s", td.Name, td.Bugged))
		}
	}
	if tr := r.Teardown; tr.LeakedPages != 0 || tr.ChargedAfter != 0 || tr.HeldByModule != 0 {
		bad = append(bad, fmt.Sprintf("after teardown: %d pages leaked, %d still charged, %d held by the module",
			tr.LeakedPages, tr.ChargedAfter, tr.HeldByModule))
	}
	return bad
}

// racingFaults checks one run of testdata/racing-faults.yaml: the build
// measured its image (two pages and a part, and a 3-byte unmeasured
// region), the vCPUs' racing faults mapped every page they touched, the
// punch removed 16 pages, and nothing leaked.
func racingFaults(t *testing.T, seed uint64, dpamt bool) {
	t.Helper()
	r := runScenario(t, "racing-faults.yaml", seed, fmt.Sprintf("dynamic_pamt: %v", dpamt))
	bad := problems(r)
	calls := r.Seamcalls
	if calls["TDH.MEM.PAGE.ADD"] != 4 || calls["TDH.MR.EXTEND"] != 3*16 {
		bad = append(bad, fmt.Sprintf("PAGE.ADD %d MR.EXTEND %d, want 4 and 48", calls["TDH.MEM.PAGE.ADD"], calls["TDH.MR.EXTEND"]))
	}
	// 640 distinct 4K pages are touched: each is AUGed once (and the rest
	// of their 2 MiB units with them, accepted lazily).
	if calls["TDH.MEM.PAGE.AUG"] < 640 || r.Guest.Touches != 640 {
		bad = append(bad, fmt.Sprintf("%d AUGs, %d touches", calls["TDH.MEM.PAGE.AUG"], r.Guest.Touches))
	}
	if r.Conversions.PunchedBytes != 16*4096 || calls["TDH.PHYMEM.PAGE.WBINVD"] != calls["TDH.MEM.PAGE.REMOVE"] {
		bad = append(bad, fmt.Sprintf("punched %d bytes; %d WBINVD for %d REMOVE", r.Conversions.PunchedBytes,
			calls["TDH.PHYMEM.PAGE.WBINVD"], calls["TDH.MEM.PAGE.REMOVE"]))
	}
	if dpamt && (calls["TDH.PHYMEM.PAMT.ADD"] == 0 || calls["TDH.PHYMEM.PAMT.ADD"] != calls["TDH.PHYMEM.PAMT.REMOVE"]) ||
		!dpamt && (calls["TDH.PHYMEM.PAMT.ADD"] != 0 || r.Memory.PAMTDynamicBytes != 0) {
		bad = append(bad, fmt.Sprintf("PAMT.ADD %d, PAMT.REMOVE %d, dynamic PAMT peak %d bytes",
			calls["TDH.PHYMEM.PAMT.ADD"], calls["TDH.PHYMEM.PAMT.REMOVE"], r.Memory.PAMTDynamicBytes))
	}
	if want := racingFaultsMRTD(); r.MRTD != want {
		bad = append(bad, fmt.Sprintf("MRTD %s, want %s", r.MRTD, want))
	}
	for _, b := range bad {
		t.Errorf("seed %d, dynamic_pamt %v: %s", seed, dpamt, b)
	}
}

// racingFaultsMRTD is the hand-computed MRTD of racing-faults.yaml's image.
func racingFaultsMRTD() string {
	return handMRTD(region{gpa: 60 << 20, data: bytes.Repeat([]byte{0x54}, 8292), measure: true},
		region{gpa: 8 << 20, data: []byte{1, 1, 1}})
}

func TestRacingFaultsNoLeak(t *testing.T) {
	for _, dpamt := range []bool{false, true} {
		racingFaults(t, 1, dpamt)
	}
}

func TestRacingFaultsManySeeds(t *testing.T) {
	for seed := range uint64(testkit.Seeds(40, 5)) {
		racingFaults(t, seed, seed%2 == 0)
	}
}

type region struct {
	gpa     uint64
	data    []byte
	measure bool
}

// handMRTD computes an image's MRTD independently of the module
// (internal/mrtdvec), as hex.
func handMRTD(regions ...region) string {
	var rs []mrtdvec.Region
	for _, r := range regions {
		rs = append(rs, mrtdvec.Region{GPA: r.gpa, Data: r.data, Measure: r.measure})
	}
	return hex.EncodeToString(mrtdvec.Hand(rs))
}
