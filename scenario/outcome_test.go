package scenario

import (
	"slices"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/report"
)

func runOutcome(t *testing.T, src string) *report.Run {
	t.Helper()
	f, err := Parse("outcome.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := Run(f, Options{})
	if r == nil {
		t.Fatal("no report")
	}
	return r
}

const outcomeTD = `
tds: [{name: a, memory: 64M, vcpus: 2}]
timeline:
  - boot: {td: a, accept: lazy, upfront: 8M}
  - convert: {td: a, count: 4, size: 16K}
`

// Every run ends as one of three classes: clean, the kernel's answer to
// an injected fault (named by the kernel function that answers and the
// fault), or a violation.
func TestOutcomes(t *testing.T) {
	t.Run("clean", func(t *testing.T) {
		r := runOutcome(t, outcomeTD)
		if r.Outcome != check.ClassClean || len(r.KernelResponses) != 0 || len(r.Violations) != 0 {
			t.Errorf("outcome %s, responses %v, violations %v: want clean", r.Outcome, r.KernelResponses, r.Violations)
		}
	})

	// A failed TDH.PHYMEM.PAGE.RECLAIM at teardown: tdx_reclaim_page()
	// WARNs and leaks the page ("the kernel cannot use it safely
	// anymore"), with the Dynamic PAMT pair it keeps. teardown_reclaims_all
	// runs and passes, and the report says the leak is on purpose.
	t.Run("reclaim fails: leaked on purpose", func(t *testing.T) {
		r := runOutcome(t, "inject: {fail: [{leaf: TDH.PHYMEM.PAGE.RECLAIM, nth: 1}]}"+outcomeTD)
		if r.Outcome != check.ClassKernelResponse {
			t.Fatalf("outcome %s, violations %v: want kernel_response", r.Outcome, r.Violations)
		}
		// The injected failure leaks one page; the TDR, whose reclaim
		// then fails for real (a page of the TD is still associated), is
		// the second, traced to the same fault.
		kr := r.KernelResponses[check.RespPagesLeaked]
		if kr.Count == 0 || len(kr.Causes) != 1 || kr.Causes["tdx_reclaim_page() <- TDH.PHYMEM.PAGE.RECLAIM TDX_OPERAND_INVALID"] != kr.Count {
			t.Errorf("pages_leaked %+v: want them all by tdx_reclaim_page() after the injected RECLAIM failure", kr)
		}
		if !slices.Contains(r.Checks.Names, check.Teardown) || r.Checks.Failed[check.Teardown] != 0 {
			t.Errorf("teardown_reclaims_all: ran %v, failed %v", r.Checks.Names, r.Checks.Failed)
		}
		if r.Teardown.LeakedPages == 0 || r.Teardown.LeakedOnPurpose != r.Teardown.LeakedPages {
			t.Errorf("teardown %+v: want every leaked page leaked on purpose", r.Teardown)
		}
	})

	// TDH.MEM.PAGE.REMOVE is BUSY, and the retry tdh_do_no_vcpus() makes
	// after kicking every vCPU out fails as well: KVM_BUG_ON() in
	// tdx_sept_remove_private_spte(). (The injector ends a BUSY's
	// contender with the kick, so the retry's failure is injected as a
	// module bug with another status; TestResponsesTrace has the BUSY
	// past the kick itself.) The VM is dead, no_kvm_bug is not
	// broken (the fault explains it), and the step that met the dead VM's
	// EIO is no step_completes violation either.
	t.Run("remove fails past the kick: KVM_BUG_ON", func(t *testing.T) {
		r := runOutcome(t, `inject: {fail: [{leaf: TDH.MEM.PAGE.REMOVE, nth: 1, status: TDX_OPERAND_BUSY}, {leaf: TDH.MEM.PAGE.REMOVE, nth: 2}]}`+outcomeTD)
		if r.Outcome != check.ClassKernelResponse || len(r.Violations) != 0 {
			t.Fatalf("outcome %s, violations %v, error %q: want kernel_response", r.Outcome, r.Violations, r.Error)
		}
		kr := r.KernelResponses[check.RespKVMBugOn]
		want := "KVM_BUG_ON() in tdx_sept_remove_private_spte() (TDH.MEM.PAGE.REMOVE) <- TDH.MEM.PAGE.REMOVE "
		var got string
		for c := range kr.Causes {
			got = c
		}
		if kr.Count != 1 || !strings.HasPrefix(got, want) || r.TDs[0].Bugged == "" {
			t.Errorf("kvm_bug_on %+v (td bugged %q): want one, %q...", kr, r.TDs[0].Bugged, want)
		}
		if r.Checks.Failed[check.NoKVMBug] != 0 || !slices.Contains(r.Checks.Names, check.NoKVMBug) {
			t.Errorf("no_kvm_bug failed %d times", r.Checks.Failed[check.NoKVMBug])
		}
	})

	// A real hazard (page pinning blocks in-place conversion, the fuzz
	// finding kept in testdata): no injected fault explains it, so it is
	// a violation.
	t.Run("hazard: violation", func(t *testing.T) {
		f, err := Load("../fuzz/testdata/hazards/pin_private_pages.yaml")
		if err != nil {
			t.Fatal(err)
		}
		r, _ := Run(f, Options{})
		if r == nil || r.Outcome != check.ClassViolation || r.Checks.Failed[check.ConversionProgress] == 0 {
			t.Fatalf("report %+v: want a conversion_progress violation", r)
		}
	})
}
