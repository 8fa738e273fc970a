package inject

import (
	"strings"

	"github.com/tdxsim/tdxsim/tdxmodule"
)

// Contender is a kind of holder of a lock a SEAMCALL needs: the TDX
// module never waits for a sharex lock, it returns TDX_OPERAND_BUSY with
// the id of the busy resource (tdx_locks.h: acquire_sharex_lock_*).
// An injected BUSY from the busy rate models one of these.
type Contender uint8

// The contender kinds.
const (
	// ContenderVCPU is a vCPU inside the TD: TDH.VP.ENTER's zero-step
	// filter holds the S-EPT tree lock exclusively
	// (Module: tdh_vp_enter.c, td_entry_stepping_filter(): BUSY(SEPT_TREE)),
	// and TDG.MEM.PAGE.ACCEPT holds the entry's guest-side lock
	// (Module: tdg_mem_page_accept.c, sept_lock_acquire_guest()). Kicking
	// every vCPU out and holding them out ends it (Kernel:
	// tdh_do_no_vcpus(), tdx_vcpu_run()'s wait_for_sept_zap).
	ContenderVCPU Contender = iota + 1
	// ContenderHost is another host thread's SEAMCALL holding a lock on
	// the same object (TDR, TDCS, TDVPR, S-EPT tree or entry, PAMT
	// entry). No host lock is held across SEAMCALLs, so it ends when
	// that SEAMCALL returns: the kernel's retry of the call runs.
	ContenderHost
	// ContenderEpoch is the TD epoch lock (TDCS.EPOCH_LOCK): TDH.VP.ENTER
	// takes it shared to count itself in the epoch, TDH.MEM.TRACK takes it
	// exclusively to bump it (Module: tdh_mem_track.c, tdh_vp_enter.c:
	// BUSY(TD_EPOCH)). A TRACK meets it while a vCPU enters, so the kick
	// ends it; an entry meets it while a TRACK runs, so its re-entry runs.
	ContenderEpoch
)

var contenderNames = [...]string{ContenderVCPU: "vcpu", ContenderHost: "host_seamcall", ContenderEpoch: "epoch"}

// String is the contender's name in Stats and reports.
func (c Contender) String() string {
	if int(c) < len(contenderNames) && contenderNames[c] != "" {
		return contenderNames[c]
	}
	return "none"
}

// viaVCPU reports whether a kick of the TD's vCPUs ends the contention:
// a vCPU inside the TD, or one entering it (the epoch lock of a TRACK).
func (c Contender) viaVCPU() bool { return c == ContenderVCPU || c == ContenderEpoch }

// Contention is what can make one leaf return TDX_OPERAND_BUSY on real
// hardware under the kernel's locking: the contender kinds, each with the
// operand id of the busy resource the module reports, the locks the leaf
// takes, the module source that takes them and the kernel code that
// decides who can hold them at the same time. No contender means the real
// module cannot return BUSY there: a BUSY is a module bug (`fail` only).
type Contention struct {
	Leaf tdxmodule.Leaf
	// Kinds are the possible contenders, Operands the operand id of the
	// BUSY each one causes (same index).
	Kinds    []Contender
	Operands []uint32
	// RunnableOnly: every contender needs the TD RUNNABLE (after
	// TDH.MR.FINALIZE a vCPU can enter, and faults of several vCPUs can
	// race); before it the kernel serializes every SEAMCALL on the TD.
	RunnableOnly bool
	Locks        string // the locks the leaf takes
	Module       string // the module source file
	Kernel       string // why the contenders are these, and the kernel's response
}

// Possible reports whether any contender can exist for the leaf.
func (c Contention) Possible() bool { return len(c.Kinds) > 0 }

// KindNames is the contender kinds joined with "+", or "none".
func (c Contention) KindNames() string {
	if len(c.Kinds) == 0 {
		return "none"
	}
	names := make([]string, len(c.Kinds))
	for i, k := range c.Kinds {
		names[i] = k.String()
	}
	return strings.Join(names, "+")
}

// The build-time and teardown paths the kernel serializes (the reason a
// leaf has no contender). Kernel: tdx_acquire_vm_state_locks() of
// Series: "[PATCH v4 26/28] KVM: TDX: Guard VM state transitions with
// "all" the locks" (20251030200951.3402865-27-seanjc@google.com): INIT_VM,
// INIT_VCPU, INIT_MEM_REGION and FINALIZE_VM hold kvm->lock, every
// vcpu->mutex and slots_lock, "fully serialized".
const (
	kernBuild    = "tdx_acquire_vm_state_locks(): build ioctls hold kvm->lock, every vcpu->mutex and slots_lock; no vCPU has entered"
	kernTdxLock  = "tdx_lock (tdx.c: \"Some SEAMCALLs acquire the TDX module globally ... serialize these SEAMCALLs\")"
	kernTeardown = "teardown: every vCPU flushed and gone; __tdx_reclaim_page(): \"no possibility of contention\""
	kernMMUWrite = "mmu_lock held for write excludes every other S-EPT SEAMCALL; the rest is vCPUs; tdh_do_no_vcpus() retries once with them kicked out"
	kernFault    = "fault path under mmu_lock read: -EBUSY -> RET_PF_RETRY, tdx_handle_ept_violation() retries locally"
	kernNotUsed  = "KVM never calls it; contenders from the module's locks"
)

// contention is the per-leaf table, indexed by leaf number.
var contention = func() (t [64]Contention) {
	none := func(l tdxmodule.Leaf, locks, module, kernel string) {
		t[l] = Contention{Leaf: l, Locks: locks, Module: module, Kernel: kernel}
	}
	some := func(l tdxmodule.Leaf, kinds []Contender, ops []uint32, runnable bool, locks, module, kernel string) {
		t[l] = Contention{Leaf: l, Kinds: kinds, Operands: ops, RunnableOnly: runnable, Locks: locks, Module: module, Kernel: kernel}
	}
	vcpu := []Contender{ContenderVCPU}
	vcpuHost := []Contender{ContenderVCPU, ContenderHost}
	treeEntry := []uint32{tdxmodule.OpSEPTTree, tdxmodule.OpRCX}

	some(tdxmodule.LeafVPEnter, []Contender{ContenderEpoch, ContenderHost}, []uint32{tdxmodule.OpTDEpoch, tdxmodule.OpSEPTTree}, true,
		"TDVPR sh, TDR sh (held while in the TD), OP_STATE sh, EPOCH_LOCK sh; S-EPT tree ex in the zero-step filter", "tdh_vp_enter.c",
		"a TRACK holds the epoch, a BLOCK the tree: tdx_exit_handlers_fastpath() -> EXIT_FASTPATH_EXIT_HANDLED, the vCPU re-enters")
	none(tdxmodule.LeafMngAddCX, "TDR ex, TDCX page ex", "tdh_mng_add_cx.c", kernBuild)
	none(tdxmodule.LeafMemPageAdd, "TDR ex (S-EPT implied), target page ex", "tdh_mem_page_add.c", kernBuild)
	some(tdxmodule.LeafMemSEPTAdd, vcpuHost, treeEntry, true,
		"TDR sh, OP_STATE sh, S-EPT tree sh, entry host lock, new page ex", "tdh_mem_sept_add.c", kernFault)
	none(tdxmodule.LeafVPAddCX, "TDVPR ex, TDR sh, OP_STATE sh, TDCX page ex", "tdh_vp_addcx.c", kernBuild)
	some(tdxmodule.LeafMemPageAug, vcpuHost, treeEntry, true,
		"TDR sh, OP_STATE sh, S-EPT tree sh, entry host lock, target range ex", "tdh_mem_page_aug.c", kernFault)
	some(tdxmodule.LeafMemRangeBlock, vcpu, []uint32{tdxmodule.OpSEPTTree}, true,
		"TDR sh, OP_STATE sh, S-EPT tree ex, entry host lock", "tdh_mem_range_block.c", kernMMUWrite)
	none(tdxmodule.LeafMngKeyConfig, "TDR ex, the package's key table", "tdh_mng_key_config.c",
		"__tdx_td_init(): one CPU per package under cpus_read_lock() (\"We never have two CPUs in the same socket trying to program the key\")")
	none(tdxmodule.LeafMngCreate, "TDR ex (a fresh page), KOT ex", "tdh_mng_create.c", "fresh TDR; KOT under "+kernTdxLock)
	none(tdxmodule.LeafVPCreate, "TDR sh, OP_STATE sh, TDVPR page ex", "tdh_vp_create.c", kernBuild)
	some(tdxmodule.LeafMemPageDemote, vcpu, []uint32{tdxmodule.OpSEPTTree}, true,
		"TDR sh, OP_STATE sh, S-EPT tree sh, entry host lock, new S-EPT page ex, 2M PAMT entry ex", "tdh_mem_page_demote.c", kernMMUWrite)
	none(tdxmodule.LeafMrExtend, "TDR ex (S-EPT implied)", "tdh_mr_extend.c", kernBuild)
	none(tdxmodule.LeafMrFinalize, "TDR ex", "tdh_mr_finalize.c", kernBuild+" (tdx_td_finalize() still maps BUSY to -EBUSY)")
	none(tdxmodule.LeafVPFlush, "TDVPR ex, TDR sh, OP_STATE sh", "tdh_vp_flush.c",
		"tdx_flush_vp(): \"No need to retry ... No other thread uses TDVPR in those cases\"")
	none(tdxmodule.LeafMngVPFlushDone, "TDR ex, KOT ex", "tdh_mng_vpflushdone.c", "tdx_mmu_release_hkid() under "+kernTdxLock)
	none(tdxmodule.LeafMngKeyFreeID, "TDR ex, KOT ex", "tdh_mng_key_freeid.c", "tdx_mmu_release_hkid() under "+kernTdxLock)
	none(tdxmodule.LeafMngInit, "TDR ex, TDCS", "tdh_mng_init.c", kernBuild)
	none(tdxmodule.LeafVPInit, "TDVPR ex, TDR sh, OP_STATE sh", "tdh_vp_init.c", kernBuild)
	some(tdxmodule.LeafMemPagePromote, vcpu, []uint32{tdxmodule.OpSEPTTree}, true,
		"TDR sh, OP_STATE sh, S-EPT tree sh, host lock on the entry and its 512 children, child S-EPT page ex", "tdh_mem_page_promote.c",
		"KVM never calls it (the huge-page series v3 never merges a range back); under mmu_lock write like BLOCK")
	some(tdxmodule.LeafPhymemPageRdmd, []Contender{ContenderHost}, []uint32{tdxmodule.OpRCX}, false,
		"page PAMT entry sh", "tdh_phymem_page_rdmd.c", kernNotUsed)
	some(tdxmodule.LeafMemSEPTRd, vcpuHost, treeEntry, true,
		"TDR sh, OP_STATE sh, S-EPT tree sh, entry host lock", "tdh_mem_sept_rd.c", kernNotUsed)
	none(tdxmodule.LeafMngKeyReclaimID, "none (returns TDX_SUCCESS)", "tdh_mng_key_reclaimid.c", "a no-op kept for compatibility")
	none(tdxmodule.LeafPhymemPageReclm, "page PAMT entry ex (at its size), owner TDR sh", "tdh_phymem_page_reclaim.c", kernTeardown)
	some(tdxmodule.LeafMemPageRemove, vcpu, []uint32{tdxmodule.OpSEPTTree}, true,
		"TDR sh, OP_STATE sh, S-EPT tree sh, entry host lock, removed page ex", "tdh_mem_page_remove.c", kernMMUWrite)
	some(tdxmodule.LeafMemSEPTRemove, vcpu, []uint32{tdxmodule.OpSEPTTree}, true,
		"TDR sh, OP_STATE sh, S-EPT tree ex, entry host lock, S-EPT page ex", "tdh_mem_sept_remove.c",
		"KVM frees S-EPT pages only after the HKID (RECLAIM); under mmu_lock write like BLOCK")
	some(tdxmodule.LeafMemTrack, []Contender{ContenderEpoch}, []uint32{tdxmodule.OpTDEpoch}, true,
		"TDR sh, OP_STATE sh, EPOCH_LOCK ex", "tdh_mem_track.c", "tdx_track() under mmu_lock write: a vCPU entering holds the epoch; tdh_do_no_vcpus() retries once with them kicked out")
	some(tdxmodule.LeafMemRangeUnblock, vcpu, []uint32{tdxmodule.OpSEPTTree}, true,
		"TDR sh, OP_STATE sh, S-EPT tree ex, entry host lock", "tdh_mem_range_unblock.c", "KVM never unblocks (it removes); under mmu_lock write like BLOCK")
	none(tdxmodule.LeafPhymemCacheWB, "the package's WBT mutex, KOT sh", "tdh_phymem_cache_wb.c", "tdx_mmu_release_hkid() under "+kernTdxLock)
	none(tdxmodule.LeafPhymemPageWBInvd, "page PAMT entry sh", "tdh_phymem_page_wbinvd.c",
		"the page was just removed and still holds its Dynamic PAMT reference: nothing else touches it or its 2M range")
	some(tdxmodule.LeafPhymemPAMTAdd, []Contender{ContenderHost}, []uint32{tdxmodule.OpRCX}, false,
		"2M PAMT entry ex; the pair's 4K entries sh", "tdh_phymem_pamt_add.c (TDX module 2.0)",
		"any SEAMCALL on a page of the 2M range (any TD) holds its 2M entry sh; tdx_pamt_get() retries")
	some(tdxmodule.LeafPhymemPAMTRemove, []Contender{ContenderHost}, []uint32{tdxmodule.OpRCX}, false,
		"2M PAMT entry ex", "tdh_phymem_pamt_remove.c (TDX module 2.0)",
		"any SEAMCALL on a page of the 2M range (any TD) holds its 2M entry sh; tdx_pamt_put() retries")
	return t
}()

// ContentionOf returns the leaf's row of the contender table (a zero row,
// no contender, for a leaf the model does not know).
func ContentionOf(leaf tdxmodule.Leaf) Contention {
	if int(leaf) < len(contention) {
		return contention[leaf]
	}
	return Contention{Leaf: leaf}
}

// ContentionTable returns every modelled leaf's row, in leaf order.
func ContentionTable() []Contention {
	var out []Contention
	for _, l := range tdxmodule.Leaves() {
		out = append(out, ContentionOf(l))
	}
	return out
}
