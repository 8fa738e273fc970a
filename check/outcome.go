package check

import (
	"slices"
	"strings"
)

// How a run ended: every run is exactly one of these.
const (
	// ClassClean: no invariant broken, no kernel response to a fault.
	ClassClean = "clean"
	// ClassKernelResponse: the kernel answered an injected module or host
	// fault the way its source says it does (one of the Response kinds
	// below, each traced to the fault), and nothing else broke.
	ClassKernelResponse = "kernel_response"
	// ClassViolation: an invariant broke with no injected fault behind it.
	ClassViolation = "violation"
)

// StepCompletes is the invariant a run breaks when a step fails that the
// scenario did not expect to fail and no injected fault explains: the
// model refused something a valid scenario asked for.
const StepCompletes = "step_completes"

// The kernel's documented responses to a failed SEAMCALL or allocation,
// as the outcome counts them (report key kernel_responses).
const (
	// RespKVMBugOn: KVM_BUG_ON() (TDX_BUG_ON() in tdx.c): the VM is marked
	// bugged and dead, every later VM and vCPU ioctl returns -EIO, and
	// what its S-EPT still maps stays there. Kernel: KVM_BUG_ON() in
	// tdx_sept_remove_private_spte(), tdx_sept_split_private_spte(),
	// tdx_track(), tdx_mem_page_add(), tdx_gmem_post_populate(),
	// __tdx_td_init(), tdx_td_vcpu_init(), tdx_td_finalize().
	RespKVMBugOn = "kvm_bug_on"
	// RespWarn: WARN_ON_ONCE() and an error to the caller, the VM lives
	// on. Kernel: tdx_pamt_put() (TDH.PHYMEM.PAMT.REMOVE failed: the pair
	// stays installed), tdx_pamt_get() (TDH.PHYMEM.PAMT.ADD failed).
	RespWarn = "warn"
	// RespErrorReturn: an errno back to userspace and nothing else, e.g.
	// -ENOMEM when kvm_mmu_topup_memory_cache() cannot fill a cache, or
	// -EBUSY from tdx_td_finalize() when TDH.MR.FINALIZE is busy.
	RespErrorReturn = "error_return"
	// RespPagesLeaked: pages leaked on purpose after a failed reclaim:
	// "the kernel cannot use it safely anymore". Kernel:
	// tdx_reclaim_page() (TDH.PHYMEM.PAGE.RECLAIM failed, WARN, the page
	// is never freed), tdx_reclaim_td_control_pages() and tdx_vcpu_free()
	// (the HKID is still assigned: control pages are left), and
	// tdx_sept_free_private_spt() (an S-EPT page not reclaimed:
	// tdp_mmu.c handle_removed_pt() leaks sp->external_spt).
	RespPagesLeaked = "pages_leaked"
	// RespHKIDLeaked: tdx_mmu_release_hkid() could not flush or free the
	// TD's key (TDH.VP.FLUSH, TDH.MNG.VPFLUSHDONE, TDH.PHYMEM.CACHE.WB or
	// TDH.MNG.KEY.FREEID failed): "HKID %d is leaked", and the TD's pages
	// then cannot be reclaimed. Kernel: tdx_mmu_release_hkid().
	RespHKIDLeaked = "hkid_leaked"
	// RespGmemFreedMapped: after a failed S-EPT removal (KVM_BUG_ON) the
	// page stays mapped in the dead TD's S-EPT while guest_memfd frees
	// it (kvm_gmem_punch_hole(), kvm_gmem_release(): nothing pins it since
	// "KVM: TDX: Drop superfluous page pinning in S-EPT management"). The
	// window opens once per such free; the model's host allocator refuses
	// the free (the PAMT still assigns the page), so the page is kept
	// aside and counted as reused only if it was handed out again before
	// the module let go of it.
	RespGmemFreedMapped = "gmem_freed_while_mapped"
)

// ResponseKinds are the kinds, in the order reports list them.
var ResponseKinds = []string{RespKVMBugOn, RespWarn, RespErrorReturn, RespPagesLeaked, RespHKIDLeaked, RespGmemFreedMapped}

// Response is one kernel response: its kind, the kernel function that
// responds, and the injected fault it answers ("" when no injected fault
// was traced: then it is not the kernel's answer to a fault but a finding).
type Response struct {
	Kind   string
	Kernel string // e.g. "KVM_BUG_ON() in tdx_sept_remove_private_spte()"
	Fault  string // e.g. "TDH.MEM.PAGE.REMOVE TDX_OPERAND_BUSY"
}

// Caused reports whether an injected fault explains r.
func (r Response) Caused() bool { return r.Fault != "" }

// Ending is what Classify reads of a finished run.
type Ending struct {
	// Failed counts, by invariant, the evaluations that found a
	// violation, after the invariants excused what the kernel does on
	// purpose (a KVM_BUG_ON traced to an injected fault is no no_kvm_bug
	// violation, say).
	Failed map[string]int
	// StepFailed: a step failed unexpectedly and no injected fault
	// explains it (step_completes).
	StepFailed bool
	// Responses are the kernel's responses to injected faults.
	Responses []Response
}

// Classify says how a run ended and, for a violation, which invariants
// broke (sorted): any broken invariant is a violation; otherwise a kernel
// response traced to an injected fault makes it kernel_response; else the
// run is clean. A step failure counts only when nothing else broke (the
// invariant that broke says more).
func Classify(e Ending) (class string, broken []string) {
	for inv, n := range e.Failed {
		if n > 0 {
			broken = append(broken, inv)
		}
	}
	if len(broken) == 0 && e.StepFailed {
		broken = append(broken, StepCompletes)
	}
	if len(broken) > 0 {
		slices.Sort(broken)
		return ClassViolation, broken
	}
	for _, r := range e.Responses {
		if r.Caused() {
			return ClassKernelResponse, nil
		}
	}
	return ClassClean, nil
}

// CountResponses tallies caused responses by kind, then by "kernel <-
// fault".
func CountResponses(rs []Response) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, r := range rs {
		if !r.Caused() {
			continue
		}
		m := out[r.Kind]
		if m == nil {
			m = map[string]int{}
			out[r.Kind] = m
		}
		m[r.Kernel+" <- "+r.Fault]++
	}
	return out
}

// leafKernel is the kernel function that issues a SEAMCALL and answers its
// failure, for a KVM_BUG_ON whose reason names only the leaf.
var leafKernel = map[string]string{
	"TDH.MNG.CREATE":          "__tdx_td_init()",
	"TDH.MNG.KEY.CONFIG":      "__tdx_td_init()",
	"TDH.MNG.ADDCX":           "__tdx_td_init()",
	"TDH.MNG.INIT":            "__tdx_td_init()",
	"TDH.VP.CREATE":           "tdx_td_vcpu_init()",
	"TDH.VP.ADDCX":            "tdx_td_vcpu_init()",
	"TDH.VP.INIT":             "tdx_td_vcpu_init()",
	"TDH.VP.ENTER":            "tdx_vcpu_run()",
	"TDH.MEM.PAGE.ADD":        "tdx_mem_page_add()",
	"TDH.MEM.PAGE.AUG":        "tdx_mem_page_aug()",
	"TDH.MEM.SEPT.ADD":        "tdx_sept_link_private_spt()",
	"TDH.MR.EXTEND":           "tdx_gmem_post_populate()",
	"TDH.MR.FINALIZE":         "tdx_td_finalize()",
	"TDH.MEM.RANGE.BLOCK":     "tdx_sept_remove_private_spte()",
	"TDH.MEM.TRACK":           "tdx_track()",
	"TDH.MEM.PAGE.REMOVE":     "tdx_sept_remove_private_spte()",
	"TDH.PHYMEM.PAGE.WBINVD":  "tdx_sept_remove_private_spte()",
	"TDH.MEM.PAGE.DEMOTE":     "tdx_sept_split_private_spte()",
	"TDH.PHYMEM.PAGE.RECLAIM": "tdx_reclaim_page()",
	"TDH.PHYMEM.PAMT.ADD":     "tdx_pamt_get()",
	"TDH.PHYMEM.PAMT.REMOVE":  "tdx_pamt_put()",
	"TDH.VP.FLUSH":            "tdx_mmu_release_hkid()",
	"TDH.MNG.VPFLUSHDONE":     "tdx_mmu_release_hkid()",
	"TDH.PHYMEM.CACHE.WB":     "tdx_mmu_release_hkid()",
	"TDH.MNG.KEY.FREEID":      "tdx_mmu_release_hkid()",
}

// bugKernel names the function of a KVM_BUG_ON from its reason: "fn: ..."
// names it; "LEAF failed at ..." names the leaf its caller issued.
func bugKernel(why string) string {
	head, _, _ := strings.Cut(why, ":")
	if strings.HasPrefix(head, "tdx_") && !strings.Contains(head, " ") {
		return "KVM_BUG_ON() in " + head + "()"
	}
	if leaf, _, ok := strings.Cut(why, " failed"); ok {
		if fn, ok := leafKernel[leaf]; ok {
			return "KVM_BUG_ON() in " + fn + " (" + leaf + ")"
		}
	}
	return "KVM_BUG_ON()"
}
