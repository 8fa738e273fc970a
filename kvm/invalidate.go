package kvm

import (
	"errors"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/internal/mutation"
	"github.com/tdxsim/tdxsim/sched"
)

// The MMU invalidation protocol (kvm_mmu_invalidate_begin/range_add/end):
// while an invalidation is in progress, or after it ended, a fault that
// snapshotted the sequence before it must not install a mapping
// (mmu_invalidate_retry_gfn) and retries instead.

func (vm *VM) invalidateBeginLocked() {
	vm.invalInProgress++
	if vm.invalInProgress == 1 {
		vm.invalStart, vm.invalEnd = ^addr.GFN(0), 0 // INVALID_GPA: no range yet
	}
}

func (vm *VM) invalidateRangeAddLocked(start, end addr.GFN) {
	if vm.invalStart > vm.invalEnd { // first range
		vm.invalStart, vm.invalEnd = start, end
		return
	}
	vm.invalStart, vm.invalEnd = min(vm.invalStart, start), max(vm.invalEnd, end)
}

func (vm *VM) invalidateEndLocked() {
	vm.invalSeq.Add(1)
	vm.invalInProgress--
}

// InvalidateBegin is the guest_memfd side's kvm_mmu_invalidate_begin plus
// range_add for each range, under mmu_lock for write (gmem.Owner).
func (vm *VM) InvalidateBegin(t *sched.Thread, ranges []gmem.Range) {
	vm.mmuLock.Lock(t)
	vm.invalidateBeginLocked()
	for _, r := range ranges {
		vm.invalidateRangeAddLocked(r.Start, r.End)
	}
	vm.mmuLock.Unlock(t)
	vm.event(t, "invalidate_begin", uint64(ranges[0].Start), uint64(ranges[len(ranges)-1].End), "")
}

// Zap unmaps ranges from the roots their filters select, under mmu_lock
// for write, and flushes TLBs if anything was zapped (gmem.Owner).
func (vm *VM) Zap(t *sched.Thread, ranges []gmem.Range) {
	vm.mmuLock.Lock(t)
	flush := false
	for _, r := range ranges {
		flush = vm.mmu.UnmapGFNRange(t, r) || flush
	}
	if flush {
		vm.mmu.FlushRemoteTLBs(t)
	}
	vm.mmuLock.Unlock(t)
}

// SplitPrivate splits private huge leaves crossing the ranges' edges,
// under mmu_lock for write, after topping up the split cache (gmem.Owner).
func (vm *VM) SplitPrivate(t *sched.Thread, ranges []gmem.Range) error {
	if err := vm.mmu.TopUpSplitCache(t); err != nil {
		return err
	}
	vm.mmuLock.Lock(t)
	defer vm.mmuLock.Unlock(t)
	return vm.SplitLocked(t, ranges)
}

// SplitLocked runs kvm_split_cross_boundary_leafs() for each range with
// mmu_lock held for write (the caller has topped the split cache up).
// When the cache runs short it drops mmu_lock, tops up and goes on: what
// was split stays split, and the caller's invalidation keeps faults from
// mapping the range meanwhile.
func (vm *VM) SplitLocked(t *sched.Thread, ranges []gmem.Range) error {
	for _, r := range ranges {
		for {
			err := vm.mmu.SplitCrossBoundary(t, r)
			if !errors.Is(err, ErrSplitCacheLow) {
				if err != nil {
					return err
				}
				break
			}
			vm.mmuLock.Unlock(t)
			err = vm.mmu.TopUpSplitCache(t)
			vm.mmuLock.Lock(t)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// InvalidateEnd is kvm_mmu_invalidate_end under mmu_lock for write
// (gmem.Owner).
func (vm *VM) InvalidateEnd(t *sched.Thread) {
	vm.mmuLock.Lock(t)
	vm.invalidateEndLocked()
	vm.mmuLock.Unlock(t)
	vm.event(t, "invalidate_end", vm.invalSeq.Load(), 0, "")
}

// InvalidateSeq returns mmu_invalidate_seq, which a fault snapshots before
// it looks up the PFN.
func (vm *VM) InvalidateSeq() uint64 { return vm.invalSeq.Load() }

// InvalidateRetry is mmu_invalidate_retry_gfn(kvm, seq, gfn): the fault
// that snapshotted seq must retry because an invalidation covering gfn is
// in progress, or one ended since. The caller holds mmu_lock.
func (vm *VM) InvalidateRetry(seq uint64, gfn addr.GFN) bool {
	if vm.invalInProgress > 0 && (vm.invalStart > vm.invalEnd || (gfn >= vm.invalStart && gfn < vm.invalEnd)) {
		return true
	}
	return vm.invalSeq.Load() != seq
}

// InvalidateInProgress returns how many invalidations are running.
func (vm *VM) InvalidateInProgress() int { return vm.invalInProgress }

// MMUNotifierInvalidate models an MMU-notifier invalidation of host virtual
// addresses [hva, hva+size) (munmap, madvise, migration of the VMM's
// memory): every overlapping memslot's GFNs are invalidated with the SHARED
// filter only, because private memory has no userspace mapping, so the
// mirror (private) root is never touched (kvm_mmu_notifier_invalidate_range_start,
// "KVM: x86/tdp_mmu: Don't zap private pages for unsupported cases").
func (vm *VM) MMUNotifierInvalidate(t *sched.Thread, hva, size uint64) {
	var ranges []gmem.Range
	for _, s := range vm.slotList() {
		lo, hi := s.userAddr, s.userAddr+s.npages<<addr.PageShift
		if hva >= hi || hva+size <= lo || s.gmemOnly {
			continue
		}
		a, b := max(hva, lo), min(hva+size, hi)
		ranges = append(ranges, gmem.Range{Slot: s,
			Start:  s.base + addr.GFN((a-lo)>>addr.PageShift),
			End:    s.base + addr.GFN((b-lo+addr.PageSize-1)>>addr.PageShift),
			Filter: gmem.FilterShared})
		if mutation.On(mutation.ZapPrivateOnNotifier) {
			ranges[len(ranges)-1].Filter |= gmem.FilterPrivate
		}
	}
	if len(ranges) == 0 {
		return
	}
	vm.InvalidateBegin(t, ranges)
	vm.Zap(t, ranges)
	vm.InvalidateEnd(t)
}

// ZapGFNRangeMemtype is a memory-type change over [start, end) (guest MTRR
// or PAT-style changes, noncoherent DMA): kvm_zap_gfn_range(), bracketed by
// an invalidation. Which roots it reaches is the MMU's rule ("KVM: x86/tdp_mmu: Don't zap private pages for unsupported cases":
// private memory is only ever write-back, so the mirror root is spared).
// Under Config.MemtypeZap = MemtypeZapNone a TD is not zapped at all, as
// in the merged trees (see MemtypeZapNone).
func (vm *VM) ZapGFNRangeMemtype(t *sched.Thread, start, end addr.GFN) {
	if vm.sys.cfg.MemtypeZap == MemtypeZapNone && vm.typ == TDXVM {
		return
	}
	vm.mmuLock.Lock(t)
	vm.invalidateBeginLocked()
	vm.invalidateRangeAddLocked(start, end)
	vm.mmuLock.Unlock(t)
	vm.mmu.ZapGFNRange(t, start, end)
	vm.InvalidateEnd(t)
}
