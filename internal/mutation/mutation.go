// Package mutation holds the model's deliberate bugs: small, named changes
// of behaviour, each in the layer whose rule it breaks, that exist only to
// show that the invariants catch such a bug (a mutation the checks miss is
// a hole in the checks). They are compiled in only under the build tag
// tdxsim_mutation:
//
//	go build -tags tdxsim_mutation -o tdxsim-mut ./cmd/tdxsim
//	TDXSIM_MUTATION=skip_track_before_remove ./tdxsim-mut run examples/convert-splits.yaml
//
// Without the tag On is the constant false, so the default build carries
// none of them and nothing can turn one on. With it, the environment
// variable TDXSIM_MUTATION names the one active mutation (an unknown name
// is exit 2). TestMutationScore runs each one's campaign (All) and requires
// the invariant named there to fail, and the same campaign to be clean with
// no mutation; scripts/mutation-score prints the score table.
package mutation

import "strings"

// EnvVar names the active mutation in a binary built with the tag.
const EnvVar = "TDXSIM_MUTATION"

// ID names a mutation.
type ID string

// The mutations. Each says what it changes, the kernel or module rule that
// change breaks, and the invariant (package check) that must catch it.
const (
	// SkipTrackBeforeRemove removes a private leaf with TDH.MEM.RANGE.BLOCK
	// and TDH.MEM.PAGE.REMOVE but no tdx_track() between them, so vCPUs may
	// still hold the old translation in their TLB. Kernel:
	// tdx_sept_remove_private_spte() (BLOCK, tdx_track(), REMOVE); Module:
	// tdh_mem_page_remove.c refuses with TDX_TLB_TRACKING_NOT_DONE, which
	// KVM answers with KVM_BUG_ON. Caught by no_kvm_bug.
	SkipTrackBeforeRemove ID = "skip_track_before_remove"

	// ForgetTDRAtTeardown drops the TD's TDR page at teardown without
	// TDH.PHYMEM.PAGE.RECLAIM or freeing it. Kernel:
	// tdx_reclaim_td_control_pages() reclaims the TDR last
	// (tdx_reclaim_page(), then the page is freed). Caught by
	// teardown_reclaims_all (a page missing from the allocator, with no
	// KVM_BUG_ON to excuse it).
	ForgetTDRAtTeardown ID = "forget_tdr_at_teardown"

	// MapHugeOverMixed lets a private fault map 2M (or 1G) over a range
	// whose memory attributes are mixed: the lpage_info MIXED flag is
	// ignored. Kernel: kvm_mmu_max_mapping_level() ->
	// __kvm_mmu_max_mapping_level() reads lpage_info disallow_lpage, which
	// kvm_arch_post_set_memory_attributes() sets with
	// KVM_LPAGE_MIXED_FLAG. Caught by mapping_level_allowed, through the
	// MMU's rule mmu.huge-over-mixed, checked as each huge private leaf is
	// installed. Only a hostile guest faults at 2M over mixed attributes
	// (a Linux guest accepts a partly shared 2 MiB unit page by page),
	// and it converts its shared pages back before its step ends, so the
	// per-step walk alone never saw the leaf: the rule was added for this
	// mutation.
	MapHugeOverMixed ID = "map_huge_over_mixed_attributes"

	// DropDPAMTPut forgets the Dynamic PAMT put after a 4K private leaf
	// is removed: the 2M range's pair keeps a user that is gone. Series:
	// "[PATCH v4 ..] KVM: TDX: Add tdx_pamt_get()/tdx_pamt_put()" (Dynamic
	// PAMT), tdx_sept_remove_private_spte() ends with tdx_pamt_put().
	// Caught by dpamt_refcounts (and teardown_reclaims_all: the pair is
	// never removed).
	DropDPAMTPut ID = "drop_dpamt_put"

	// EarlyMMUUnlock releases mmu_lock in the page fault right after the
	// mmu_invalidate_retry_gfn() check, before the walk installs the
	// SPTE: an invalidation can then zap and free the page between the
	// check and the install. Kernel: kvm_tdp_page_fault() holds mmu_lock
	// for read across kvm_tdp_mmu_map(), and tdp_mmu_set_spte_atomic()
	// asserts it (lockdep_assert_held_read). Caught by
	// no_violation_events (mmu.lock-not-held: the model's form of that
	// assertion in the atomic SPTE change, added for this mutation: the
	// race alone is rarely hit).
	EarlyMMUUnlock ID = "early_mmu_unlock"

	// GmemReleaseLockInversion takes guest_memfd's invalidate lock before
	// kvm->slots_lock when the file is released, the reverse of binding
	// (slots_lock, then the invalidate lock). Kernel: kvm_gmem_release()
	// takes kvm->slots_lock, then filemap_invalidate_lock(). Caught by
	// lock_order (lockdep: an ABBA cycle between the two classes).
	GmemReleaseLockInversion ID = "gmem_release_lock_inversion"

	// ZapPrivateOnNotifier makes an MMU-notifier invalidation of the
	// VMM's memory zap private leaves too (the PRIVATE filter with the
	// SHARED one), though private memory has no userspace mapping. The
	// guest loses memory it accepted. Kernel:
	// kvm_mmu_notifier_invalidate_range_start() sets .attr_filter =
	// KVM_FILTER_SHARED ("KVM: x86/tdp_mmu: Don't zap private pages for
	// unsupported cases"). Caught by guest_reads_back (the guest takes a
	// #VE on memory it accepted).
	ZapPrivateOnNotifier ID = "zap_private_on_notifier"

	// AugSkipsPending makes TDH.MEM.PAGE.AUG install the page MAPPED
	// instead of PENDING, so the guest can read a page it never accepted
	// (and which the accept would have zeroed). Module:
	// tdh_mem_page_aug.c (the new leaf is SEPT_PENDING; only
	// TDG.MEM.PAGE.ACCEPT, tdg_mem_page_accept.c, makes it MAPPED).
	// Caught by guest_reads_back (the guest's accept answers
	// TDX_PAGE_ALREADY_ACCEPTED for a page it never accepted).
	AugSkipsPending ID = "aug_skips_pending"

	// SkipGuestInhibit splits a private huge leaf to the guest's accept
	// level but does not set the guest inhibit on the huge page, so a
	// fault may map it huge again over pages the guest accepts smaller.
	// Series: "[PATCH v3 13/24] KVM: TDX: Honor the guest's accept level
	// contained in an EPT violation" (hugepage_set_guest_inhibit(),
	// "KVM: x86: Introduce hugepage_set_guest_inhibit()"). Caught by
	// no_kvm_bug, through a race of a hostile guest: another vCPU's 2M
	// accept of the same huge page maps it 2M between the 4K accept's
	// inhibit point and its fault, which then finds a huge mirror leaf
	// above its level (the TDP MMU's KVM_BUG_ON: a private huge leaf is
	// never split under mmu_lock for read). Without the race the model
	// cannot map the huge page again: it never frees a mirror page table
	// while the TD runs (no huge-page recovery), so a split stays split.
	SkipGuestInhibit ID = "skip_guest_inhibit_on_split"

	// FreePTToWrongCache frees a KVM page-table page into the pool of the
	// external (S-EPT) page cache instead of the shadow-page cache it came
	// from. Kernel: tdp_mmu_free_sp() frees sp->spt and sp->external_spt
	// separately; each page came from its own kvm_mmu_memory_cache
	// (mmu_shadow_page_cache, mmu_external_spt_cache). Caught by
	// cache_pool (hostmem refuses a free to a source the page did not come
	// from, hostmem.wrong-source; the page then stays allocated, so
	// teardown_reclaims_all fails too).
	FreePTToWrongCache ID = "free_pt_to_wrong_cache"

	// SkipClearOnRemove leaves a removed private page holding the TD's
	// content: no reset after TDH.MEM.PAGE.REMOVE. Kernel:
	// tdx_sept_remove_private_spte() -> tdx_quirk_reset_folio() /
	// tdx_clear_page() (MOVDIR64B with the host key) before the page goes
	// back to guest_memfd. It ESCAPES: shared_not_private would see a
	// shared GPA backed by a page still holding the TD's content, but the
	// model never backs one with such a page. Every allocator clears a
	// page before handing it out (clear_highpage in guest_memfd's
	// kvm_gmem_get_pfn(), zeroed anonymous memory for the VMM), and the
	// shared alias is the VMM's own anonymous memory, never the page that
	// was private, even under in-place conversion. The kernel's reset
	// matters because of the partial-write machine-check erratum
	// (X86_BUG_TDX_PW_MCE) and for host reads of the page, neither of
	// which the model has; an invariant that would catch it is "no page
	// goes back to the host allocator holding a TD's private content".
	SkipClearOnRemove ID = "skip_clear_on_remove"

	// UnchargedPageTables tops up the per-vCPU shadow-page cache without
	// __GFP_ACCOUNT: the VM's page tables are not charged to its memory
	// cgroup. Kernel: kvm_mmu_create() sets
	// mmu_shadow_page_cache.gfp_zero = __GFP_ZERO with GFP_KERNEL_ACCOUNT
	// in kvm_mmu_topup_memory_cache(). Caught by allocations_charged.
	UnchargedPageTables ID = "uncharged_page_tables"

	// SkipInvalidateRetry drops the mmu_invalidate_retry_gfn() check from
	// the page fault: a fault that looked its PFN up before an
	// invalidation began installs it after the invalidation zapped and
	// freed it. Kernel: kvm_tdp_page_fault() -> is_page_fault_stale() /
	// mmu_invalidate_retry_gfn() under mmu_lock. Caught by
	// guest_reads_back when a run hits the race (a stale page shows the
	// guest content it did not write, or loses what it did):
	// testdata/invalidate-retry.yaml, a shrunk fuzz finding, does.
	SkipInvalidateRetry ID = "skip_invalidate_retry"
)

// Mutation is one deliberate bug and how to show it is caught.
type Mutation struct {
	ID ID
	// Layer is the package the change is in.
	Layer string
	// Invariant is the check that must fail (check's name).
	Invariant string
	// Args is the tdxsim command line of its targeted campaign, from the
	// repository root: a "run" of a scenario that exercises the broken
	// path, or a short "fuzz" campaign. Clean with no mutation.
	Args []string
	// Escapes, when set, says why the invariant misses this mutation (a
	// known hole in the checks); the score counts it as not caught, and
	// TestMutationScore requires it still to escape, so the note stays
	// true.
	Escapes string
}

// fuzzArgs is a short fuzz campaign that stops at its first finding.
func fuzzArgs(seed string, runs string, extra ...string) []string {
	return append([]string{"fuzz", "--seed", seed, "--runs", runs, "--workers", "1", "--schedules", "2",
		"--shrink-runs", "1", "--out", "", "--json", "--stop-at-finding"}, extra...)
}

// All lists every mutation, in the order of the score table.
var All = []Mutation{
	{SkipTrackBeforeRemove, "kvm/tdx", "no_kvm_bug", run("examples/costs.yaml"), ""},
	{ForgetTDRAtTeardown, "kvm/tdx", "teardown_reclaims_all", run("examples/costs.yaml"), ""},
	{MapHugeOverMixed, "kvm", "mapping_level_allowed", run("internal/mutation/testdata/hostile-mixed.yaml"), ""},
	{DropDPAMTPut, "kvm/tdx", "dpamt_refcounts", run("examples/costs.yaml"), ""},
	{EarlyMMUUnlock, "kvm/mmu", "no_violation_events", run("examples/costs.yaml"), ""},
	{GmemReleaseLockInversion, "gmem", "lock_order", run("examples/costs.yaml"), ""},
	{ZapPrivateOnNotifier, "kvm", "guest_reads_back", run("internal/mutation/testdata/notifier-private.yaml"), ""},
	{AugSkipsPending, "tdxmodule", "guest_reads_back", run("examples/costs.yaml"), ""},
	{SkipGuestInhibit, "kvm/tdx", "no_kvm_bug", fuzzArgs("1", "20", "--hostile"), ""},
	{FreePTToWrongCache, "kvm/mmu", "cache_pool", run("examples/costs.yaml"), ""},
	{SkipClearOnRemove, "kvm/tdx", "shared_not_private", run("internal/mutation/testdata/inplace-written.yaml"),
		"every allocator clears a page before reuse and the shared alias is never the page that was private"},
	{UnchargedPageTables, "kvm/mmu", "allocations_charged", run("examples/costs.yaml"), ""},
	{SkipInvalidateRetry, "kvm/mmu", "guest_reads_back", run("internal/mutation/testdata/invalidate-retry.yaml"), ""},
}

func run(file string) []string { return []string{"run", "--json", file} }

// Lookup finds a mutation by name.
func Lookup(name string) (Mutation, bool) {
	for _, m := range All {
		if string(m.ID) == name {
			return m, true
		}
	}
	return Mutation{}, false
}

func names() string {
	var s []string
	for _, m := range All {
		s = append(s, string(m.ID))
	}
	return strings.Join(s, ", ")
}
