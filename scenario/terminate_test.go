package scenario

import (
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/check"
)

const terminateTD = `
tds: [{name: a, memory: 64M, vcpus: 2}]
timeline:
  - boot: {accept: lazy, upfront: 16M}
  - touch: {pattern: random, count: 400}
`

// teardown=terminate_vm on a TD with 2M and 4K private leaves and no
// conversion: teardown reclaims every leaf with TDH.PHYMEM.PAGE.RECLAIM,
// no BLOCK, TRACK, REMOVE or WBINVD runs in the whole run, and
// teardown_reclaims_all holds; per_page is the same run removing them.
// Series: "[PATCH v5] KVM: TDX: Add sub-ioctl KVM_TDX_TERMINATE_VM"
// (20250718181541.98146-1-seanjc@google.com).
func TestTerminateVMTeardown(t *testing.T) {
	run := func(teardown string) (map[string]uint64, map[string]int64, int) {
		f, err := Parse("t.yaml", []byte("policies: {teardown: "+teardown+"}"+terminateTD))
		if err != nil {
			t.Fatal(err)
		}
		r, err := Run(f, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Checks.Failed[check.Teardown] != 0 || len(r.Violations) != 0 || r.Teardown.LeakedPages != 0 || r.Teardown.ChargedAfter != 0 {
			t.Errorf("%s: failed %v, violations %v, %d leaked, %d charged", teardown, r.Checks.Failed, r.Violations, r.Teardown.LeakedPages, r.Teardown.ChargedAfter)
		}
		return r.Seamcalls, r.Teardown.PrivateReclaimed, int(r.Mappings["4K"] + r.Mappings["2M"])
	}
	sc, pr, leaves := run("terminate_vm")
	for _, leaf := range []string{"TDH.MEM.RANGE.BLOCK", "TDH.MEM.TRACK", "TDH.MEM.PAGE.REMOVE", "TDH.PHYMEM.PAGE.WBINVD"} {
		if sc[leaf] != 0 {
			t.Errorf("terminate_vm: %d %s", sc[leaf], leaf)
		}
	}
	if got := pr["4K"] + pr["2M"]; got == 0 || int(got) != leaves || pr["2M"] == 0 {
		t.Errorf("terminate_vm: reclaimed %v, want all %d private leaves at the end, some 2M", pr, leaves)
	}
	sc2, pr2, _ := run("per_page")
	if sc2["TDH.MEM.PAGE.REMOVE"] != uint64(leaves) || pr2 != nil {
		t.Errorf("per_page: %d REMOVEs for %d leaves, reclaimed %v", sc2["TDH.MEM.PAGE.REMOVE"], leaves, pr2)
	}
	if sc["TDH.PHYMEM.PAGE.RECLAIM"] != sc2["TDH.PHYMEM.PAGE.RECLAIM"]+uint64(leaves) {
		t.Errorf("RECLAIM: %d with terminate_vm, %d per page, %d leaves", sc["TDH.PHYMEM.PAGE.RECLAIM"], sc2["TDH.PHYMEM.PAGE.RECLAIM"], leaves)
	}
}

// An injected RECLAIM failure after KVM_TDX_TERMINATE_VM is
// tdx_reclaim_page()'s WARN and -EIO, which the tree's
// remove_external_spte() turns into KVM_BUG_ON: the page is leaked, left
// to the module on purpose; guest_memfd's free of it is refused by the
// host allocator, and teardown_reclaims_all still holds (what is not back
// is what the module holds).
func TestTerminateVMReclaimFailureLeaks(t *testing.T) {
	f, err := Parse("t.yaml", []byte("policies: {teardown: terminate_vm}\ninject: {fail: [{leaf: TDH.PHYMEM.PAGE.RECLAIM, nth: 1}]}"+terminateTD))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := Run(f, Options{})
	if r == nil {
		t.Fatal("no report")
	}
	if r.Injected["TDH.PHYMEM.PAGE.RECLAIM TDX_OPERAND_INVALID"] != 1 {
		t.Errorf("injected %v", r.Injected)
	}
	if !strings.Contains(r.TDs[0].Bugged, "TDH.PHYMEM.PAGE.RECLAIM") {
		t.Errorf("bugged %q, want the failed RECLAIM", r.TDs[0].Bugged)
	}
	if r.Teardown.LeakedPages == 0 || r.Teardown.LeakedPages > int64(r.Teardown.HeldByModule) {
		t.Errorf("%d pages not back, %d held by the module: want the leak, all of it the module's", r.Teardown.LeakedPages, r.Teardown.HeldByModule)
	}
	for _, v := range r.Violations {
		switch {
		case strings.HasPrefix(v, "no_kvm_bug"):
		case strings.HasPrefix(v, "no_use_after_free") && strings.Contains(v, "hostmem.free-tdx-owned"):
		default:
			t.Errorf("violation: %s", v)
		}
	}
	if r.Checks.Failed[check.Teardown] != 0 {
		t.Errorf("teardown_reclaims_all failed: %v", r.Violations)
	}
	t.Logf("%d pages not back, %d held by the module; bugged %q", r.Teardown.LeakedPages, r.Teardown.HeldByModule, r.TDs[0].Bugged)
}
