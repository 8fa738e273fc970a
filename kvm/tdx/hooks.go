package tdx

import (
	"fmt"
	"sync/atomic"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/internal/mutation"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxcall"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// The external-S-EPT hooks (struct kvm_x86_ops members implemented in
// tdx.c) that the TDP MMU calls for the mirror root.

func busy(st tdxmodule.Status) bool { return st.HasCode(tdxmodule.OperandBusy) }

func (td *TD) vcpuOf(v *mmu.VCPU) *VCPU {
	if v == nil {
		return nil
	}
	tv, _ := v.Arch.(*VCPU)
	return tv
}

func (td *TD) pamtCacheOf(v *mmu.VCPU) *mmu.Cache {
	if tv := td.vcpuOf(v); tv != nil {
		return tv.pamtCache
	}
	return nil
}

// TopUpExternalCache tops up the vCPU's Dynamic PAMT page cache before
// mmu_lock (the DPAMT series' topup_external_cache hook): enough for the
// leaf and every S-EPT page one fault may add. This cache is TDX's and
// separate from KVM's page-table caches (Dynamic PAMT v4 "KVM: TDX: Add x86 ops for external spt cache").
func (td *TD) TopUpExternalCache(t *sched.Thread, v *mmu.VCPU) error {
	if c := td.pamtCacheOf(v); c != nil {
		return c.TopUp(t)
	}
	return nil
}

// SetExternalSPTE maps a private leaf at level. Kernel:
// tdx_sept_set_private_spte() -> tdx_sept_map_leaf_spte() (v6.19 with the
// huge-page series): before FINALIZE it is TDH.MEM.PAGE.ADD from
// page_add_src (4K only: tdx_mem_page_add), after it TDH.MEM.PAGE.AUG at
// the level. Only a 4K mapping takes a Dynamic PAMT reference (patch 17:
// a 2M page's PAMT entry is its own). BUSY -> EBUSY (the fault retries);
// other errors are KVM_BUG_ON (EIO). No reference is taken on the page
// ("KVM: TDX: Drop superfluous page pinning in S-EPT management"; Config.PinPrivatePages takes one), and the page or folio is
// never looked at (the TDX huge-page series v3).
func (td *TD) SetExternalSPTE(t *sched.Thread, v *mmu.VCPU, gfn addr.GFN, level addr.Level, pfn addr.PFN) error {
	h := td.h
	small := level == addr.Level4K
	if small {
		if err := h.pamtGet(t, pfn, td.pamtCacheOf(v), td.vm.Account()); err != nil {
			return err
		}
	}
	gpa := gfn.GPA()
	if td.State() != StateRunnable {
		if !td.hasPageAddSrc || !small {
			if small {
				_ = h.pamtPut(t, pfn)
			}
			return td.vm.Bug(t, fmt.Sprintf("tdx_mem_page_add: %s at %s before KVM_TDX_FINALIZE_VM (no source page, or not 4K)", gfn, level))
		}
		st, _ := tdxcall.MemPageAdd(h.Mod, t, td.tdr, gpa, pfn, td.pageAddSrc)
		return td.pinIfInstalled(t, td.installed(t, "TDH.MEM.PAGE.ADD", st, gfn, pfn, small, &td.stats.PagesAdded), pfn, level)
	}
	st, _ := tdxcall.MemPageAug(h.Mod, t, td.tdr, gpa, level, pfn)
	count := &td.stats.PagesAugmented
	if !small {
		count = &td.stats.HugePagesAugmented
	}
	return td.pinIfInstalled(t, td.installed(t, "TDH.MEM.PAGE.AUG", st, gfn, pfn, small, count), pfn, level)
}

// pinIfInstalled is the pin_private_pages policy (v6.16's get_page in
// tdx_sept_set_private_spte, dropped by "KVM: TDX: Drop superfluous page pinning in S-EPT management"): once the module holds
// the leaf, every 4K page of it carries one more reference, which only a
// successful REMOVE drops (tdx_unpin). The default takes none.
func (td *TD) pinIfInstalled(t *sched.Thread, err error, pfn addr.PFN, level addr.Level) error {
	if err != nil || !td.cfg.PinPrivatePages {
		return err
	}
	if perr := td.h.Mem.GetPages(pfn, level.Pages()); perr != nil {
		return td.vm.Bug(t, fmt.Sprintf("get_page on %s: %v", pfn, perr))
	}
	td.stats.PagesPinned.Add(int64(level.Pages()))
	return nil
}

// installed finishes a hook that handed page to the module with leaf:
// success counts it; otherwise the page's Dynamic PAMT reference (when it
// took one: pamt) goes back, and BUSY becomes -EBUSY (the fault retries)
// while any other status is TDX_BUG_ON (-EIO).
func (td *TD) installed(t *sched.Thread, leaf string, st tdxmodule.Status, gfn addr.GFN, page addr.PFN, pamt bool, count *atomic.Int64) error {
	if st == tdxmodule.Success {
		count.Add(1)
		return nil
	}
	if pamt {
		_ = td.h.pamtPut(t, page)
	}
	if busy(st) {
		td.stats.BusyRetries.Add(1)
		return errno.New(leaf, errno.EBUSY, st.String())
	}
	return td.bug(t, leaf, st, gfn)
}

// PrivateMaxLevel is tdx_gmem_private_max_mapping_level() (patch 24): 4K
// until the TD is RUNNABLE (TDH.MEM.PAGE.ADD maps 4K only), then 2M, or 1G
// when the module allows 1G AUG (the model's extension; the series stops
// at 2M).
//
// Series: "[PATCH v3 24/24] KVM: TDX: Turn on PG_LEVEL_2M" (thread
// 20260106101646.24809-1-yan.y.zhao@intel.com): huge pages stay off when the
// module does not enumerate TDX_FEATURES0 ENHANCED_DEMOTE_INTERRUPTIBILITY,
// so KVM never meets DEMOTE's TDX_INTERRUPTED_RESTARTABLE (v3 does not
// retry it; it avoids it).
func (td *TD) PrivateMaxLevel() addr.Level {
	switch {
	case td.State() != StateRunnable:
		return addr.Level4K
	case td.h.Mod.Config().Features0()&tdxmodule.Features0EnhancedDemoteInterruptibility == 0:
		return addr.Level4K
	case td.h.Mod.Config().Allow1GAug:
		return addr.Level1G
	}
	return addr.Level2M
}

// LinkExternalSPT adds an S-EPT page below the entry at level. Kernel:
// tdx_sept_link_private_spt() -> TDH.MEM.SEPT.ADD, after the page's
// Dynamic PAMT get. BUSY -> EBUSY; other errors KVM_BUG_ON (EIO).
func (td *TD) LinkExternalSPT(t *sched.Thread, v *mmu.VCPU, gfn addr.GFN, level addr.Level, spt addr.PFN) error {
	h := td.h
	if err := h.pamtGet(t, spt, td.pamtCacheOf(v), td.vm.Account()); err != nil {
		return err
	}
	st, _ := tdxcall.MemSEPTAdd(h.Mod, t, td.tdr, gfn.GPA(), level, spt)
	return td.installed(t, "TDH.MEM.SEPT.ADD", st, gfn, spt, true, &td.stats.SEPTPagesAdded)
}

// RemoveExternalSPTE removes a private leaf at level, with mmu_lock held
// for write. Kernel: tdx_sept_remove_private_spte() (v6.19 with the
// huge-page series): HKID must be assigned; TDH.MEM.RANGE.BLOCK;
// tdx_track() (TDH.MEM.TRACK and a kick of every vCPU out of the guest) on
// a RUNNABLE TD; TDH.MEM.PAGE.REMOVE; then TDH.PHYMEM.PAGE.WBINVD with the
// TD's key for every 4K page of the leaf, one SEAMCALL each, stopping at
// the first failure (patch 03; Series: "[RFC PATCH v5 27/45] x86/virt/tdx:
// Enhance tdh_phymem_page_wbinvd_hkid() to invalidate huge pages"
// (20260129011517.3545883-28-seanjc@google.com)) and a reset of the
// range (patch 04), which goes back to guest_memfd as ordinary memory;
// last, for a 4K leaf only, the page's Dynamic PAMT put (patch 17). BLOCK,
// TRACK and REMOVE go through tdh_do_no_vcpus(). Any failure is KVM_BUG_ON:
// the VM is dead and the page stays assigned in the S-EPT (EIO).
func (td *TD) RemoveExternalSPTE(t *sched.Thread, gfn addr.GFN, level addr.Level, pfn addr.PFN) error {
	h := td.h
	if td.hkid == 0 {
		if td.cfg.TerminateVM {
			return td.reclaimPrivate(t, gfn, level, pfn)
		}
		return td.vm.Bug(t, "tdx_sept_remove_private_spte: HKID already released")
	}
	gpa := gfn.GPA()
	var err error
	if mutation.On(mutation.SkipTrackBeforeRemove) {
		err = td.block(t, gfn, level)
	} else {
		err = td.blockAndTrack(t, gfn, level)
	}
	if err != nil {
		return err
	}
	st := td.doNoVCPUs(t, func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.MemPageRemove(h.Mod, t, td.tdr, gpa, level) })
	if st != tdxmodule.Success {
		return td.bug(t, "TDH.MEM.PAGE.REMOVE", st, gfn)
	}
	for k := range addr.PFN(level.Pages()) {
		if st, _ := tdxcall.PhymemPageWBInvd(h.Mod, t, pfn+k, td.hkid); st != tdxmodule.Success {
			return td.bug(t, "TDH.PHYMEM.PAGE.WBINVD", st, gfn)
		}
	}
	td.releasePrivate(t, level, pfn)
	if level == addr.Level4K {
		td.stats.PagesRemoved.Add(1)
	} else {
		td.stats.HugePagesRemoved.Add(1)
	}
	return nil
}

// releasePrivate is what follows a leaf's removal from the S-EPT, by
// REMOVE or by RECLAIM after the HKID is gone: the page is cleared
// (Kernel: tdx_quirk_reset_folio(), tdx_clear_page()), unpinned under the
// pinning design (tdx_unpin()), and a 4K page drops its Dynamic PAMT
// reference.
func (td *TD) releasePrivate(t *sched.Thread, level addr.Level, pfn addr.PFN) {
	h := td.h
	if !mutation.On(mutation.SkipClearOnRemove) {
		_ = h.Mem.FillTag(t, pfn, level.Order(), 0)
	}
	if td.cfg.PinPrivatePages {
		_ = h.Mem.PutPages(t, pfn, level.Pages())
		td.stats.PagesPinned.Add(-int64(level.Pages()))
	}
	if level == addr.Level4K && !mutation.On(mutation.DropDPAMTPut) {
		_ = h.pamtPut(t, pfn)
	}
}

// blockAndTrack is the common start of removing and demoting a leaf:
// TDH.MEM.RANGE.BLOCK through tdh_do_no_vcpus (failure is KVM_BUG_ON),
// then tdx_track().
func (td *TD) blockAndTrack(t *sched.Thread, gfn addr.GFN, level addr.Level) error {
	if err := td.block(t, gfn, level); err != nil {
		return err
	}
	return td.track(t)
}

// block is TDH.MEM.RANGE.BLOCK through tdh_do_no_vcpus (failure is
// KVM_BUG_ON).
func (td *TD) block(t *sched.Thread, gfn addr.GFN, level addr.Level) error {
	st := td.doNoVCPUs(t, func() (tdxmodule.Status, tdxmodule.Regs) {
		return tdxcall.MemRangeBlock(td.h.Mod, t, td.tdr, gfn.GPA(), level)
	})
	if st != tdxmodule.Success {
		return td.bug(t, "TDH.MEM.RANGE.BLOCK", st, gfn)
	}
	return nil
}

// FreeExternalSPT reclaims an S-EPT page at teardown. Kernel:
// tdx_sept_free_private_spt(): the HKID must already be released
// (KVM_BUG_ON, page leaked); TDH.PHYMEM.PAGE.RECLAIM (failure: WARN, page
// leaked); reset; Dynamic PAMT put. The MMU frees the page on success.
func (td *TD) FreeExternalSPT(t *sched.Thread, gfn addr.GFN, level addr.Level, spt addr.PFN) error {
	h := td.h
	if td.hkid != 0 {
		td.leak(spt, addr.Level4K)
		return td.vm.Bug(t, "tdx_sept_free_private_spt: HKID still assigned")
	}
	st, _ := tdxcall.PhymemPageReclaim(h.Mod, t, spt)
	if st != tdxmodule.Success {
		td.leak(spt, addr.Level4K)
		h.warn(t, "TDH.PHYMEM.PAGE.RECLAIM", st, spt)
		return errno.Newf("tdx_sept_free_private_spt", errno.EIO, "%v", st)
	}
	_ = h.Mem.FillTag(t, spt, 0, 0)
	_ = h.pamtPut(t, spt)
	td.stats.SEPTPagesReclaimed.Add(1)
	return nil
}

// SplitExternalSPTE demotes the huge private leaf at gfn, level (mapping
// pfn) into the
// new S-EPT page spt, with mmu_lock held for write. Kernel:
// tdx_sept_split_private_spte() (patches 08, 21-23): the TD must be
// RUNNABLE; the S-EPT page's Dynamic PAMT reference and, for a 2M leaf,
// the page pair for the guest range it splits (2M mappings have none) come
// from the per-VM split cache; TDH.MEM.RANGE.BLOCK, tdx_track(),
// TDH.MEM.PAGE.DEMOTE through tdh_do_no_vcpus. The range's refcount then
// counts its 512 4K pages. With too few pages in the cache it returns
// kvm.ErrSplitCacheLow before touching anything. A failure after BLOCK
// cannot be undone (no NON-BLOCKING-RESIZE): KVM_BUG_ON, EIO.
func (td *TD) SplitExternalSPTE(t *sched.Thread, gfn addr.GFN, level addr.Level, pfn, spt addr.PFN) error {
	h := td.h
	if td.State() != StateRunnable || td.hkid == 0 {
		return td.vm.Bug(t, fmt.Sprintf("tdx_sept_split_private_spte: TD is %s", td.State()))
	}
	if level != addr.Level2M && !(level == addr.Level1G && h.Mod.Config().Allow1GAug) {
		return td.vm.Bug(t, fmt.Sprintf("tdx_sept_split_private_spte: level %s", level))
	}
	guestPair := h.dynamic() && level == addr.Level2M
	if h.dynamic() {
		need := 2 // the S-EPT page's pair, in case its range has none yet
		if guestPair {
			need += 2
		}
		if td.splitPAMT.Len() < need {
			return kvm.ErrSplitCacheLow
		}
	}
	if err := h.pamtGet(t, spt, td.splitPAMT, td.vm.Account()); err != nil {
		return err
	}
	var pair [2]addr.PFN
	if guestPair {
		pair[0], _ = td.splitPAMT.Take(t)
		pair[1], _ = td.splitPAMT.Take(t)
	}
	undo := func() {
		_ = h.pamtPut(t, spt)
		if guestPair {
			td.splitPAMT.Return(pair[0])
			td.splitPAMT.Return(pair[1])
		}
	}
	if err := td.blockAndTrack(t, gfn, level); err != nil {
		undo()
		return err
	}
	st := td.doNoVCPUs(t, func() (tdxmodule.Status, tdxmodule.Regs) {
		return tdxcall.MemPageDemote(h.Mod, t, td.tdr, gfn.GPA(), level, spt, pair)
	})
	if st != tdxmodule.Success {
		undo()
		return td.bug(t, "TDH.MEM.PAGE.DEMOTE", st, gfn)
	}
	if guestPair {
		if err := h.pamtDemoted(t, pfn); err != nil {
			return td.vm.Bug(t, err.Error())
		}
	}
	td.stats.Splits.Add(1)
	return nil
}

// TopUpSplitCache fills the TD's per-VM split cache with the Dynamic PAMT
// pages splits demotes may need (two pairs each), before mmu_lock (patch
// 20). The pages are charged to the VM.
func (td *TD) TopUpSplitCache(t *sched.Thread, splits int) error {
	if td.splitPAMT == nil {
		return nil
	}
	return td.splitPAMT.TopUpTo(t, 4*splits)
}

// doNoVCPUs is tdh_do_no_vcpus() (v6.19): with mmu_lock held for write,
// run the SEAMCALL; on TDX_OPERAND_BUSY (contention with TDH.VP.ENTER or a
// guest TDCALL on the same S-EPT entries) stop vCPUs from entering the
// guest (wait_for_sept_zap), kick every vCPU out, and run it once more.
// The second attempt is "guaranteed to succeed absent bugs"; its status is
// returned either way.
func (td *TD) doNoVCPUs(t *sched.Thread, call func() (tdxmodule.Status, tdxmodule.Regs)) tdxmodule.Status {
	st, _ := call()
	if !busy(st) {
		return st
	}
	td.stats.NoVCPURetries.Add(1)
	td.waitForSEPTZap.Store(true)
	td.kickAll(t)
	if td.h.NoVCPUs != nil {
		td.h.NoVCPUs(td.tdr, true)
		defer td.h.NoVCPUs(td.tdr, false)
	}
	st, _ = call()
	td.waitForSEPTZap.Store(false)
	return st
}

// track is tdx_track(): on a RUNNABLE TD, TDH.MEM.TRACK (through
// tdh_do_no_vcpus; failure is KVM_BUG_ON) bumps the TD's TLB epoch, then
// every vCPU is kicked out of the guest so that none still runs in the old
// epoch (KVM_REQ_OUTSIDE_GUEST_MODE): the module flushes their S-EPT TLB on
// the next entry and the next TRACK can succeed.
func (td *TD) track(t *sched.Thread) error {
	if td.State() != StateRunnable {
		return nil
	}
	st := td.doNoVCPUs(t, func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.MemTrack(td.h.Mod, t, td.tdr) })
	if st != tdxmodule.Success {
		return td.bug(t, "TDH.MEM.TRACK", st, 0)
	}
	td.kickAll(t)
	return nil
}

// kickAll is kvm_make_all_cpus_request(KVM_REQ_OUTSIDE_GUEST_MODE): every
// vCPU in guest mode is asked to exit, and the caller waits until each one
// has (they re-enter in the new epoch, or not at all while
// wait_for_sept_zap is set).
func (td *TD) kickAll(t *sched.Thread) {
	td.stats.Kicks.Add(1)
	type pending struct {
		v   *VCPU
		gen uint64
	}
	var wait []pending
	for _, v := range td.vcpus {
		if v.inGuest.Load() {
			v.kick.Store(true)
			wait = append(wait, pending{v, v.exits.Load()})
		}
	}
	if len(wait) == 0 {
		return
	}
	t.WaitUntil("every vCPU out of guest mode (KVM_REQ_OUTSIDE_GUEST_MODE)", func() bool {
		for _, p := range wait {
			if p.v.inGuest.Load() && p.v.exits.Load() == p.gen {
				return false
			}
		}
		return true
	})
}
