// Package tdx models KVM's TDX code (arch/x86/kvm/vmx/tdx.c, v6.19, with
// the Dynamic PAMT series): the external-S-EPT hooks the TDP MMU calls,
// implemented with SEAMCALLs on the TDX module; the TD build ioctls
// (KVM_TDX_INIT_VM, KVM_TDX_INIT_VCPU, KVM_TDX_INIT_MEM_REGION,
// KVM_TDX_FINALIZE_VM); the vCPU's TD exits (EPT violations, MapGPA); and
// teardown (HKID release, then reclaim of every TD page).
//
// No page is pinned ("KVM: TDX: Drop superfluous page pinning in S-EPT management"): mapping a page into the S-EPT takes no
// reference; guest_memfd keeps the page until its invalidation reaches the
// MMU. TDX_OPERAND_BUSY is retried the kernel's way; any other unexpected
// status is KVM_BUG_ON: the VM is marked dead and its ioctls return EIO.
package tdx

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxcall"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// Host is the host-wide TDX state: the module, the pool of private HKIDs
// (tdx_guest_keyid_alloc), and the Dynamic PAMT refcounts, one per 2 MiB
// physical range, under the global dpamt_lock (tdx_pamt_get/put in
// arch/x86/virt/vmx/tdx/tdx.c of the Dynamic PAMT series).
type Host struct {
	Sys  *kvm.System
	Mem  *hostmem.Memory
	Mod  *tdxmodule.Module
	sink event.Sink

	// hkidMu guards hkids, as the IDA's own lock does tdx_guest_keyid_pool
	// in the kernel: KVM_TDX_INIT_VM of different VMs, and teardown, hold
	// no lock in common. A host mutex, never held across a yield, so it
	// adds no scheduling point.
	hkidMu sync.Mutex
	hkids  []bool // index = HKID; true = in use

	dpamtLock *sched.SpinLock
	putLocked bool // HostConfig.PAMTPutUnderLock
	// dpamtRef is each 2M physical range's refcount, indexed by PFN >> 9:
	// a flat array, as the kernel's pamt_refcounts is (one atomic_t per
	// 2M of physical memory, tdx_find_pamt_refcount()), so the fault path
	// does no map lookup. Written under dpamtLock; atomic so the readers
	// that hold no dpamt_lock (DPAMTRef, DPAMTRanges: checks and tests)
	// need no lock either. dpamtRanges counts the nonzero entries.
	dpamtRef    []atomic.Int32
	dpamtRanges atomic.Int64
	dpamtSrc    hostmem.Source

	// NoVCPUs, when set, is told as tdh_do_no_vcpus() opens (on) and
	// closes its retry window on the TD whose TDR is tdr: fault injection
	// ends its modelled vCPU contention there (inject.Injector.NoVCPUs).
	NoVCPUs func(tdr addr.PFN, on bool)

	// leaked counts the pages KVM's TDX code left behind on purpose,
	// over every TD (one that failed to build included): see LeakedPages.
	leaked atomic.Int64
	// leakedRefs holds, by 2 MiB range, the leaked 4 KiB pages whose
	// Dynamic PAMT reference the kernel never put (LeakedDPAMTRefs).
	// Leaks follow injected faults only, so this stays small.
	leakMu     sync.Mutex
	leakedRefs map[addr.PFN]int32
}

// LeakedDPAMTRefs is, by 2 MiB range (PFN >> 9), how many Dynamic PAMT
// references leaks keep: a 4 KiB page tdx_reclaim_page() could not take
// back, or one left while the HKID was assigned, is leaked before
// tdx_pamt_put() (the put follows a successful reclaim only), so its
// range's pair stays installed and counted; a pair whose
// TDH.PHYMEM.PAMT.REMOVE failed stays installed with its last reference. Kernel:
// tdx_reclaim_control_page(), tdx_sept_free_private_spt(),
// tdx_sept_remove_private_spte() (DPAMT v4: tdx_pamt_put() after
// tdx_reclaim_page()).
func (h *Host) LeakedDPAMTRefs() map[addr.PFN]int32 {
	h.leakMu.Lock()
	defer h.leakMu.Unlock()
	out := make(map[addr.PFN]int32, len(h.leakedRefs))
	for r, n := range h.leakedRefs {
		out[r] = n
	}
	return out
}

// LeakedPages is how many pages KVM's TDX code leaked on purpose so far:
// pages tdx_reclaim_page() could not take back from the module (and
// tdx_sept_free_private_spt()'s S-EPT pages), control pages left while
// the HKID is still assigned (tdx_reclaim_td_control_pages(),
// tdx_vcpu_free()), and the two pages of a Dynamic PAMT pair whose
// TDH.PHYMEM.PAMT.REMOVE failed (tdx_pamt_put()). Each is counted once.
func (h *Host) LeakedPages() int64 { return h.leaked.Load() }

// leak counts the page at pfn, mapped at level, that the TD leaks on
// purpose (Stats.Leaked and Host.LeakedPages count its 4 KiB pages); a
// 4 KiB page keeps its Dynamic PAMT reference (LeakedDPAMTRefs).
func (td *TD) leak(pfn addr.PFN, level addr.Level) {
	n := int64(level.Pages())
	td.stats.Leaked.Add(n)
	td.h.leaked.Add(n)
	if level != addr.Level4K || !td.h.dynamic() {
		return
	}
	td.h.leakRef(uint64(pfn >> 9))
}

// leakRef counts one Dynamic PAMT reference of the 2 MiB range r that a
// leak keeps for good (LeakedDPAMTRefs).
func (h *Host) leakRef(r uint64) {
	h.leakMu.Lock()
	defer h.leakMu.Unlock()
	if h.leakedRefs == nil {
		h.leakedRefs = map[addr.PFN]int32{}
	}
	h.leakedRefs[addr.PFN(r)]++
}

// dpamtSourceName is where every Dynamic PAMT page comes from: the vCPU
// caches and the direct allocations for control pages.
const dpamtSourceName = "tdx.dpamt"

// HostConfig is what of the kernel's TDX host code a profile sets.
type HostConfig struct {
	// PAMTPutUnderLock: tdx_pamt_put() takes a range's last reference
	// with atomic_dec_and_lock() (DPAMT v6), not atomic_dec_and_test()
	// before pamt_lock (v4); kernel.Profile.PAMTPutUnderLock.
	PAMTPutUnderLock bool
}

// NewHost wraps a KVM system and the TDX module on the same host memory.
func NewHost(sys *kvm.System, mod *tdxmodule.Module, cfg HostConfig) (*Host, error) {
	mem := sys.Memory()
	src, err := mem.RegisterSource(dpamtSourceName)
	if err != nil {
		return nil, err
	}
	return &Host{Sys: sys, Mem: mem, Mod: mod, sink: sys.Sink(),
		hkids:     make([]bool, mod.Config().HKIDs+1),
		dpamtLock: sched.NewSpinLock("tdx.dpamt_lock"), putLocked: cfg.PAMTPutUnderLock,
		dpamtRef: make([]atomic.Int32, (mem.Pages()+511)>>9),
		dpamtSrc: src}, nil
}

// allocHKID is tdx_guest_keyid_alloc(): ENOSPC when all are taken.
func (h *Host) allocHKID() (int, error) {
	h.hkidMu.Lock()
	defer h.hkidMu.Unlock()
	for i := 1; i < len(h.hkids); i++ {
		if !h.hkids[i] {
			h.hkids[i] = true
			return i, nil
		}
	}
	return 0, errno.Newf("tdx_guest_keyid_alloc", errno.ENOSPC, "all %d private HKIDs are in use", len(h.hkids)-1)
}

func (h *Host) freeHKID(id int) {
	h.hkidMu.Lock()
	defer h.hkidMu.Unlock()
	if id > 0 && id < len(h.hkids) {
		h.hkids[id] = false
	}
}

// HKIDsInUse returns how many private HKIDs are assigned.
func (h *Host) HKIDsInUse() int {
	h.hkidMu.Lock()
	defer h.hkidMu.Unlock()
	n := 0
	for _, u := range h.hkids {
		if u {
			n++
		}
	}
	return n
}

func (h *Host) dynamic() bool { return h.Mod.Config().DynamicPAMT }

// DPAMTRef returns the Dynamic PAMT refcount of the 2 MiB range holding pfn.
func (h *Host) DPAMTRef(pfn addr.PFN) int32 {
	return h.ref(uint64(pfn >> 9))
}

// ref is the refcount of the 2M range key (0 for one outside host memory).
func (h *Host) ref(key uint64) int32 {
	if key >= uint64(len(h.dpamtRef)) {
		return 0
	}
	return h.dpamtRef[key].Load()
}

// DPAMTRanges returns how many 2 MiB ranges hold a Dynamic PAMT pair.
func (h *Host) DPAMTRanges() int {
	return int(h.dpamtRanges.Load())
}

// setRef writes a range's refcount; dpamtLock is held.
func (h *Host) setRef(key uint64, n int32) {
	h.counted(h.dpamtRef[key].Swap(n), n)
}

// counted keeps dpamtRanges, the nonzero refcounts, across old -> n.
func (h *Host) counted(old, n int32) {
	switch {
	case old == 0 && n != 0:
		h.dpamtRanges.Add(1)
	case old != 0 && n == 0:
		h.dpamtRanges.Add(-1)
	}
}

// casRef changes the range's refcount from n to next(n) with one
// compare-and-swap, retried while it races; next returns false to leave n
// as it is. It returns the n it saw and whether it changed it; a range
// outside host memory has no refcount (0, unchanged). The kernel's
// atomic_inc_not_zero(), atomic_add_unless() and atomic_dec_and_test()
// are each one of these.
func (h *Host) casRef(key uint64, next func(n int32) (int32, bool)) (int32, bool) {
	if key >= uint64(len(h.dpamtRef)) {
		return 0, false
	}
	r := &h.dpamtRef[key]
	for {
		n := r.Load()
		m, ok := next(n)
		if !ok {
			return n, false
		}
		if r.CompareAndSwap(n, m) {
			h.counted(n, m)
			return n, true
		}
	}
}

// incNotZero is atomic_inc_not_zero() on the range's refcount.
func (h *Host) incNotZero(key uint64) bool {
	_, ok := h.casRef(key, func(n int32) (int32, bool) { return n + 1, n != 0 })
	return ok
}

// decUnlessOne is atomic_add_unless(-1, 1), atomic_dec_and_lock()'s
// lockless half: false when the refcount is 1 (or 0) and was left as it is.
func (h *Host) decUnlessOne(key uint64) bool {
	_, ok := h.casRef(key, func(n int32) (int32, bool) { return n - 1, n > 1 })
	return ok
}

// decRef is atomic_dec_return() on the range's refcount, the count after;
// ok is false, and the refcount stays 0, when it was 0 (the model refuses
// the underflow the kernel would WARN about later).
func (h *Host) decRef(key uint64) (n int32, ok bool) {
	old, ok := h.casRef(key, func(n int32) (int32, bool) { return n - 1, n > 0 })
	return old - 1, ok
}

// pamtGet takes a reference on the Dynamic PAMT pair of pfn's 2 MiB range.
// A range that has one only gains a reference (atomic_inc_not_zero(), no
// lock, no allocation); otherwise the two pages come from cache when one
// is given (under mmu_lock, where nothing may sleep) or are allocated,
// charged to acct, and TDH.PHYMEM.PAMT.ADD installs them under dpamt_lock
// for 0 -> 1. Kernel: tdx_pamt_get() with the series' "Optimize" patch
// (kernel.Profile.PAMTPutUnderLock).
func (h *Host) pamtGet(t *sched.Thread, pfn addr.PFN, cache *mmu.Cache, acct hostmem.Account) error {
	if !h.dynamic() {
		return nil
	}
	key := uint64(pfn >> 9)
	// The refcount is memory other CPUs' gets and puts race on: its
	// atomic is a scheduling point, as the lock it replaced was.
	t.Yield()
	if h.incNotZero(key) {
		return nil
	}
	var pair [2]addr.PFN
	for i := range pair {
		var err error
		if cache != nil {
			pair[i], err = cache.Take(t)
		} else {
			pair[i], err = h.Mem.Alloc(t, hostmem.Request{Source: h.dpamtSrc, Account: acct, Charged: true})
		}
		if err != nil {
			h.releasePair(t, pair[:i], cache)
			return errno.Wrap("tdx_pamt_get", errno.ENOMEM, err)
		}
	}
	h.dpamtLock.Lock(t)
	if h.ref(key) > 0 { // lost the race to another tdx_pamt_get()
		h.dpamtRef[key].Add(1)
		h.dpamtLock.Unlock(t)
		h.releasePair(t, pair[:], cache)
		return nil
	}
	// PAMT.ADD takes the range's 2M PAMT entry exclusively while SEAMCALLs
	// on its pages hold it shared: BUSY is contention, retried.
	var st tdxmodule.Status
	for range busyRetries {
		if st, _ = tdxcall.PhymemPAMTAdd(h.Mod, t, pfn, pair); !st.HasCode(tdxmodule.OperandBusy) {
			break
		}
	}
	switch {
	case st == tdxmodule.Success:
		h.setRef(key, 1)
	case st.HasCode(tdxmodule.HPARangeNotFree) && !h.putLocked:
		// A tdx_pamt_put() took the refcount to 0 outside the lock and
		// has not removed the pair yet: this reference keeps it, and the
		// put's recheck under the lock then leaves it installed.
		h.setRef(key, 1)
		h.dpamtLock.Unlock(t)
		h.releasePair(t, pair[:], cache)
		return nil
	default:
		h.dpamtLock.Unlock(t)
		h.releasePair(t, pair[:], cache)
		h.warn(t, "TDH.PHYMEM.PAMT.ADD", st, pfn)
		return errno.Newf("tdx_pamt_get", errno.EIO, "TDH.PHYMEM.PAMT.ADD for %s: %v", (pfn &^ 511).HPA(), st)
	}
	h.dpamtLock.Unlock(t)
	return nil
}

// busyRetries bounds the retries of a SEAMCALL whose BUSY is contention
// with other CPUs; in the model the holder always makes progress.
const busyRetries = 1000

func (h *Host) releasePair(t *sched.Thread, pages []addr.PFN, cache *mmu.Cache) {
	for _, p := range pages {
		if cache != nil {
			cache.Return(p)
		} else {
			_ = h.Mem.Free(t, p, h.dpamtSrc)
		}
	}
}

// pamtPut drops a reference; on 1 -> 0 it removes the pair with
// TDH.PHYMEM.PAMT.REMOVE under dpamt_lock, resets and frees both pages. A
// failed removal is a loud warning: the reference is put back and, when
// the pair is still installed, its pages leak. How the 1 -> 0 meets the
// lock is HostConfig.PAMTPutUnderLock. Kernel: tdx_pamt_put().
func (h *Host) pamtPut(t *sched.Thread, pfn addr.PFN) error {
	if !h.dynamic() {
		return nil
	}
	key := uint64(pfn >> 9)
	t.Yield() // the refcount's atomic, as in pamtGet
	if h.putLocked {
		// atomic_dec_and_lock(): decrement without the lock unless
		// this is the last reference, which drops under it.
		if h.decUnlessOne(key) {
			return nil
		}
		h.dpamtLock.Lock(t)
		if n, ok := h.decRef(key); !ok || n > 0 {
			h.dpamtLock.Unlock(t)
			return h.underflow(t, pfn, ok)
		}
	} else {
		// atomic_dec_and_test() outside the lock, then the recheck
		// under it: a tdx_pamt_get() may have taken the range since.
		if n, ok := h.decRef(key); !ok || n > 0 {
			return h.underflow(t, pfn, ok)
		}
		h.dpamtLock.Lock(t)
		if h.ref(key) != 0 { // lost the race to tdx_pamt_get()
			h.dpamtLock.Unlock(t)
			return nil
		}
	}
	defer h.dpamtLock.Unlock(t)
	var st tdxmodule.Status
	var out tdxmodule.Regs
	for range busyRetries {
		if st, out = tdxcall.PhymemPAMTRemove(h.Mod, t, pfn); !st.HasCode(tdxmodule.OperandBusy) {
			break
		}
	}
	if st != tdxmodule.Success {
		h.warn(t, "TDH.PHYMEM.PAMT.REMOVE", st, pfn)
		h.setRef(key, 1) // the kernel puts the reference back
		if !st.HasCode(tdxmodule.NoPAMTPagePair) {
			h.leaked.Add(2) // the pair stays installed: both pages leak
		}
		h.leakRef(key) // with the reference the kernel keeps
		return errno.Newf("tdx_pamt_put", errno.EIO, "TDH.PHYMEM.PAMT.REMOVE for %s: %v", (pfn &^ 511).HPA(), st)
	}
	for _, r := range []uint64{out.RDX, out.R8} {
		p := addr.HPA(r).PFN()
		_ = h.Mem.FillTag(t, p, 0, 0)
		_ = h.Mem.Free(t, p, h.dpamtSrc)
	}
	return nil
}

// underflow is pamtPut's ending when the reference it dropped was not
// the last (ok) or did not exist: a put on a zero refcount is a WARN and
// -EIO, and the refcount stays 0.
func (h *Host) underflow(t *sched.Thread, pfn addr.PFN, ok bool) error {
	if ok {
		return nil
	}
	h.warn(t, "tdx_pamt_put", 0, pfn)
	return errno.Newf("tdx_pamt_put", errno.EIO, "refcount underflow for the 2M range at %s", (pfn &^ 511).HPA())
}

// pamtDemoted records that TDH.MEM.PAGE.DEMOTE installed the page pair of
// the 2 MiB range at pfn for its 512 new 4K leaves: the range's refcount
// becomes 512, one per page (patch 23, "Pass guest memory's PFN info to
// demote for updating pamt_refcount"). A range that already had a pair
// could not have been mapped 2M: that is a bug.
func (h *Host) pamtDemoted(t *sched.Thread, pfn addr.PFN) error {
	h.dpamtLock.Lock(t)
	defer h.dpamtLock.Unlock(t)
	key := uint64(pfn >> 9)
	if n := h.ref(key); n != 0 {
		return errno.Newf("tdx_pamt_demote", errno.EIO, "2M range at %s already had %d Dynamic PAMT references", (pfn &^ 511).HPA(), n)
	}
	h.setRef(key, 512)
	return nil
}

// warn records a WARN: a kernel warning that does not kill a VM.
func (h *Host) warn(t *sched.Thread, what string, st tdxmodule.Status, pfn addr.PFN) {
	ev := event.Event{Kind: event.KindTDX, Name: "WARN", Status: uint64(st), Args: [4]uint64{uint64(pfn)},
		Detail: fmt.Sprintf("%s failed for %s: %v", what, pfn, st)}
	t.Stamp(&ev)
	h.sink.Emit(ev)
}

// allocControlPage is tdx_alloc_control_page(): a zeroed, accounted page
// with its Dynamic PAMT pair, for TDR, TDCS, TDVPR and TDVPX.
func (h *Host) allocControlPage(t *sched.Thread, acct hostmem.Account) (addr.PFN, error) {
	p, err := h.Mem.Alloc(t, hostmem.Request{Source: hostmem.SourceBuddy, Account: acct, Charged: true})
	if err != nil {
		return 0, errno.Wrap("tdx_alloc_control_page", errno.ENOMEM, err)
	}
	if err := h.pamtGet(t, p, nil, acct); err != nil {
		_ = h.Mem.Free(t, p, hostmem.SourceBuddy)
		return 0, err
	}
	return p, nil
}

// freeControlPage is tdx_free_control_page() for a page the module never
// took: put the pair, free the page.
func (h *Host) freeControlPage(t *sched.Thread, p addr.PFN) {
	_ = h.pamtPut(t, p)
	_ = h.Mem.Free(t, p, hostmem.SourceBuddy)
}

// reclaimPage is tdx_reclaim_page() + tdx_free_control_page(): take a page
// back from the module with TDH.PHYMEM.PAGE.RECLAIM, reset it, put its
// pair and free it to src. A failed reclaim leaks the page (WARN).
func (h *Host) reclaimPage(t *sched.Thread, p addr.PFN, src hostmem.Source) error {
	st, _ := tdxcall.PhymemPageReclaim(h.Mod, t, p)
	if st != tdxmodule.Success {
		h.warn(t, "TDH.PHYMEM.PAGE.RECLAIM", st, p)
		return errno.Newf("tdx_reclaim_page", errno.EIO, "%s: %v (page leaked)", p, st)
	}
	_ = h.Mem.FillTag(t, p, 0, 0) // tdx_quirk_reset_page
	_ = h.pamtPut(t, p)
	return h.Mem.Free(t, p, src)
}
