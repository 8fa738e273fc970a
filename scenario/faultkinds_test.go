package scenario

import (
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/check"
)

// Every kind of injected fault gets the kernel's documented response,
// and the run is classed as that response (never as a violation): the
// response kind, the kernel function that answers, and the fault it
// names. A module failure at build is the build's KVM_BUG_ON and EIO
// (6.19's TDX_BUG_ON() conversions); on the fault path AUG and SEPT.ADD
// are KVM_BUG_ON; a zap-path failure (BLOCK, TRACK, REMOVE, DEMOTE) is
// KVM_BUG_ON, after which guest_memfd frees pages the S-EPT still maps
// (no pin); a failed RECLAIM leaks the page on purpose; an allocation
// failure from a cache or pool is -ENOMEM to the caller; a Dynamic PAMT
// add that fails is tdx_pamt_get()'s WARN and -EIO. BUSY per contender
// is TestBusyEverywhereOnlyContends; hwpoison is TestHWPoisonPrivatePage.
func TestEveryFaultKindGetsTheKernelsResponse(t *testing.T) {
	const td = `
tds: [{name: a, memory: 64M, vcpus: 2, image: [{gpa: 0x3E00000, size: 64K, measure: true}]}]
timeline:
  - boot: {td: a, accept: lazy, upfront: 8M}
  - touch: {td: a, pattern: random, count: 300}
  - convert: {td: a, count: 4, size: 16K}
  - convert: {td: a, count: 1, size: 2M}
`
	const huge = "policies: {hugepages: 2M, dynamic_pamt: true}\n"
	const small = "policies: {hugepages: off, dynamic_pamt: true}\n"
	for _, c := range []struct {
		policies, inject string
		kind, kernel     string // the response and a part of its "kernel <- fault" cause
	}{
		{huge, "fail: [{leaf: TDH.MNG.CREATE, nth: 1}]", check.RespKVMBugOn, "__tdx_td_init() (TDH.MNG.CREATE) <- TDH.MNG.CREATE TDX_OPERAND_INVALID"},
		{huge, "fail: [{leaf: TDH.MEM.PAGE.ADD, nth: 3}]", check.RespKVMBugOn, "tdx_mem_page_add() (TDH.MEM.PAGE.ADD) <- TDH.MEM.PAGE.ADD"},
		{huge, "fail: [{leaf: TDH.MR.EXTEND, nth: 3}]", check.RespKVMBugOn, "tdx_gmem_post_populate() (TDH.MR.EXTEND) <- TDH.MR.EXTEND"},
		{huge, "fail: [{leaf: TDH.MEM.SEPT.ADD, nth: 3}]", check.RespKVMBugOn, "tdx_sept_link_private_spt() (TDH.MEM.SEPT.ADD) <- TDH.MEM.SEPT.ADD"},
		{huge, "fail: [{leaf: TDH.MEM.PAGE.AUG, nth: 3}]", check.RespKVMBugOn, "tdx_mem_page_aug() (TDH.MEM.PAGE.AUG) <- TDH.MEM.PAGE.AUG"},
		{huge, "fail: [{leaf: TDH.MEM.RANGE.BLOCK, nth: 2}]", check.RespKVMBugOn, "tdx_sept_remove_private_spte() (TDH.MEM.RANGE.BLOCK) <- TDH.MEM.RANGE.BLOCK"},
		{huge, "fail: [{leaf: TDH.MEM.TRACK, nth: 1}]", check.RespKVMBugOn, "tdx_track() (TDH.MEM.TRACK) <- TDH.MEM.TRACK"},
		{huge, "fail: [{leaf: TDH.MEM.PAGE.REMOVE, nth: 2}]", check.RespKVMBugOn, "tdx_sept_remove_private_spte() (TDH.MEM.PAGE.REMOVE) <- TDH.MEM.PAGE.REMOVE"},
		{huge, "fail: [{leaf: TDH.MEM.PAGE.REMOVE, nth: 2}]", check.RespGmemFreedMapped, "<- TDH.MEM.PAGE.REMOVE"},
		{huge, "fail: [{leaf: TDH.MEM.PAGE.DEMOTE, nth: 1}]", check.RespKVMBugOn, "tdx_sept_split_private_spte() (TDH.MEM.PAGE.DEMOTE) <- TDH.MEM.PAGE.DEMOTE"},
		{huge, "fail: [{leaf: TDH.PHYMEM.PAGE.RECLAIM, nth: 2}]", check.RespPagesLeaked, "tdx_reclaim_page() <- TDH.PHYMEM.PAGE.RECLAIM"},
		{small, "fail: [{leaf: TDH.PHYMEM.PAMT.ADD, nth: 3}]", "", "<- TDH.PHYMEM.PAMT.ADD"},
		{huge, "alloc_fail: [{source: kvm.mmu_shadow_page_cache, nth: 1}]", check.RespErrorReturn, "kvm_mmu_topup_memory_cache returns -ENOMEM <- allocation failed"},
		{huge, "alloc_fail: [{source: kvm.mmu_external_spt_cache, nth: 1}]", check.RespErrorReturn, "kvm_mmu_topup_memory_cache returns -ENOMEM <- allocation failed"},
		{huge, "alloc_fail: [{source: tdx.dpamt, nth: 1}]", check.RespErrorReturn, "tdx_pamt_get returns -ENOMEM <- allocation failed"},
		{huge, "alloc_fail: [{source: buddy, nth: 50}]", check.RespErrorReturn, "returns -ENOMEM <- allocation failed"},
	} {
		t.Run(c.inject, func(t *testing.T) {
			r := runOutcome(t, c.policies+"inject: {"+c.inject+"}"+td)
			if r.Outcome != check.ClassKernelResponse || len(r.Violations) != 0 {
				t.Fatalf("outcome %s, violations %v, error %q: want kernel_response", r.Outcome, r.Violations, r.Error)
			}
			found := false
			for kind, kr := range r.KernelResponses {
				for cause := range kr.Causes {
					if (c.kind == "" || kind == c.kind) && strings.Contains(cause, c.kernel) {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("no %s response %q among %+v", c.kind, c.kernel, r.KernelResponses)
			}
		})
	}
}
