package scenario

import (
	"testing"

	"github.com/tdxsim/tdxsim/check"
)

// A control page whose TDH.PHYMEM.PAGE.RECLAIM fails at teardown is
// leaked before tdx_pamt_put(), so its 2 MiB range keeps its Dynamic
// PAMT pair and reference: dpamt_refcounts counts the leaked page as
// still needing them, teardown_reclaims_all counts it as leaked on
// purpose, and the run is the kernel's response, not a violation.
// Kernel: tdx_reclaim_control_page() (DPAMT v4: the put follows a
// successful reclaim only).
func TestLeakedPageKeepsItsDPAMTReference(t *testing.T) {
	f, err := Parse("leak.yaml", []byte(`
policies: {dynamic_pamt: true}
tds: [{name: td0, memory: 40M, vcpus: 1}]
inject: {fail: [{leaf: TDH.PHYMEM.PAGE.RECLAIM, nth: 5}]}
timeline:
  - teardown: {td: td0}
`))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := Run(f, Options{})
	if r == nil {
		t.Fatal("no report")
	}
	if len(r.Violations) > 0 || r.Outcome != check.ClassKernelResponse {
		t.Fatalf("outcome %s, violations %v", r.Outcome, r.Violations)
	}
	if r.Teardown.LeakedPages == 0 || r.Teardown.LeakedOnPurpose != r.Teardown.LeakedPages {
		t.Errorf("teardown: %d pages leaked, %d of them on purpose", r.Teardown.LeakedPages, r.Teardown.LeakedOnPurpose)
	}
}
