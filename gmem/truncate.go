package gmem

import (
	"errors"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/sched"
)

// invalidateFilter is kvm_gmem_get_invalidate_filter: an INIT_SHARED file
// maps through the shared root, others through the private one; an in-place
// file may have both.
func (f *File) invalidateFilter() Filter {
	switch {
	case f.inPlace:
		return FilterShared | FilterPrivate
	case f.flags&FlagInitShared != 0:
		return FilterShared
	default:
		return FilterPrivate
	}
}

// invalidateBegin, zap and invalidateEnd are kvm_gmem_invalidate_begin,
// kvm_gmem_zap and kvm_gmem_invalidate_end for this file's one VM.
func (f *File) invalidateBegin(t *sched.Thread, start, end uint64) bool {
	rs := f.ranges(start, end, f.invalidateFilter())
	if len(rs) == 0 {
		return false
	}
	f.owner.InvalidateBegin(t, rs)
	return true
}

func (f *File) zap(t *sched.Thread, start, end uint64) {
	if rs := f.ranges(start, end, f.invalidateFilter()); len(rs) > 0 {
		f.owner.Zap(t, rs)
	}
}

func (f *File) invalidateEnd(t *sched.Thread, begun bool) {
	if begun {
		f.owner.InvalidateEnd(t)
	}
}

// splitPrivate asks the VM to split private huge mappings crossing the
// range's edges before anything is unmapped (kvm_gmem_split_private: split
// the S-EPT before the folio).
func (f *File) splitPrivate(t *sched.Thread, start, end uint64) error {
	if rs := f.ranges(start, end, FilterPrivate); len(rs) > 0 {
		return f.owner.SplitPrivate(t, rs)
	}
	return nil
}

// punchHole is kvm_gmem_punch_hole: under the exclusive invalidate lock,
// invalidate begin, split crossing private mappings, zap, truncate the
// folios, invalidate end.
func (f *File) punchHole(t *sched.Thread, start, end uint64) error {
	end = min(end, f.size>>pageShift)
	if start >= end {
		return nil // entirely past EOF: nothing to do, success
	}
	f.invalidate.Lock(t)
	defer f.invalidate.Unlock(t)
	begun := f.invalidateBegin(t, start, end)
	if err := f.splitPrivate(t, start, end); err != nil {
		f.invalidateEnd(t, begun)
		return errno.Wrapf("fallocate(PUNCH_HOLE)", errno.Of(err), err, "splitting private mappings")
	}
	f.zap(t, start, end)
	err := f.truncate(t, start, end, true)
	f.invalidateEnd(t, begun)
	return err
}

// truncate removes every folio in [start, end) from the page cache
// (truncate_inode_pages_range / merge_truncate_range). For a HugeTLB file
// split folios are merged back first; if someone else still holds a
// reference the merge is refused and, when requireMerge, so is the
// truncation (EAGAIN).
func (f *File) truncate(t *sched.Thread, start, end uint64, requireMerge bool) error {
	f.Reap(t)
	f.unmapUser(t, start, end)
	f.pc.Lock()
	defer f.pc.Unlock()
	if f.pageOrder != 0 {
		if idx, ok := f.safeRefcount(start, end); !ok && requireMerge {
			return errno.Newf("fallocate(PUNCH_HOLE)", errno.EAGAIN, "folio at index %#x holds an extra reference", idx)
		}
	}
	for _, k := range f.chunkKeys(start, end) {
		c := f.chunks.get(k)
		if c == nil {
			continue // freed with its huge folio already
		}
		if f.pageOrder != 0 {
			// HugeTLB ranges are aligned to the huge page (fallocate
			// enforces it), so the whole folio goes, merged first if
			// a conversion split it.
			n := uint64(1) << f.pageOrder
			if err := f.freeHuge(t, (k<<9)&^(n-1)); err != nil {
				return err
			}
			continue
		}
		if err := f.truncate4K(t, c, max(start, k<<9), min(end, (k+1)<<9)); err != nil {
			return err
		}
		if c.present.empty() {
			f.chunks.del(k)
		}
	}
	return nil
}

// truncate4K is release1 for every present 4 KiB folio of chunk c in
// [lo, hi) (one chunk at most), in index order, as one hostmem batch.
func (f *File) truncate4K(t *sched.Thread, c *chunk, lo, hi uint64) error {
	var idx [512]uint64
	var pfns [512]addr.PFN
	var out [512]hostmem.Released
	n := 0
	for i := lo; i < hi; i++ {
		if c.present.get(i & 511) {
			idx[n], pfns[n] = i, c.pfn(i&511)
			n++
		}
	}
	err := f.mem.ReleaseFolios(t, pfns[:n], hostmem.SourceBuddy, out[:n])
	for j, r := range out[:n] {
		switch r {
		case hostmem.ReleaseSkipped:
			return errno.Wrapf("truncate", errno.EBUSY, err, "index %#x", idx[j])
		case hostmem.ReleaseHeld, hostmem.ReleaseVetoed:
			f.orphans = append(f.orphans, orphan{pfns[j], hostmem.SourceBuddy})
		}
		off := idx[j] & 511
		c.present.clear(off)
		c.uptodate.clear(off)
		c.poison.clear(off)
		f.pages--
	}
	return nil
}

// freeHuge merges the HugeTLB folio whose first index is first (if it was
// split) and frees it to its pool.
func (f *File) freeHuge(t *sched.Thread, first uint64) error {
	n := uint64(1) << f.pageOrder
	c0 := f.chunks.get(first >> 9)
	if c0 == nil {
		return nil
	}
	head := c0.pfn(0)
	src := hostmem.SourceHuge2M
	if f.pageOrder == addr.Order1G {
		src = hostmem.SourceHuge1G
	}
	if fo, ok := f.mem.FolioOf(head); ok && fo.Order != f.pageOrder {
		if err := f.mem.MergeFolio(t, head, f.pageOrder); err != nil {
			return errno.Wrapf("truncate", errno.EAGAIN, err, "merging folio at index %#x", first)
		}
	}
	if err := f.release1(t, head, src); err != nil {
		return errno.Wrapf("truncate", errno.EBUSY, err, "index %#x", first)
	}
	for i := uint64(0); i < n; i += 512 {
		f.chunks.del((first + i) >> 9)
	}
	f.pages -= n
	return nil
}

// orphan is a folio removed from the page cache while someone else (a
// fault in flight, a pin) still held a reference: like the kernel's folio,
// it is freed when that reference goes, not before.
type orphan struct {
	pfn addr.PFN
	src hostmem.Source
}

// release1 drops the page cache's reference on the folio headed by pfn
// (filemap_remove_folio + folio_put): it is freed now when guest_memfd held
// the only reference, later (Reap) otherwise.
//
// A folio the TDX module still assigns to a TD is one the kernel would
// free anyway (no pinning; after a failed S-EPT removal KVM_BUG_ON
// kills the VM and the page goes back while it may still be mapped).
// hostmem's guard refuses that free and records it as a violation; here the
// folio is then kept aside like an orphan, so the model stays consistent,
// and freed by Reap once the module has let go of it (reclaim at teardown).
func (f *File) release1(t *sched.Thread, pfn addr.PFN, src hostmem.Source) error {
	if fo, ok := f.mem.FolioOf(pfn); ok && fo.Ref > 1 {
		f.orphans = append(f.orphans, orphan{pfn, src})
		return nil
	}
	err := f.mem.Free(t, pfn, src)
	if errors.Is(err, hostmem.ErrTDXOwned) {
		f.orphans = append(f.orphans, orphan{pfn, src})
		return nil
	}
	return err
}

// Reap frees the truncated folios whose last outside reference is gone,
// and returns how many still wait.
func (f *File) Reap(t *sched.Thread) int {
	f.pc.Lock()
	defer f.pc.Unlock()
	keep := f.orphans[:0]
	for _, o := range f.orphans {
		if fo, ok := f.mem.FolioOf(o.pfn); ok && fo.Ref > 1 || f.mem.Vetoed(o.pfn) {
			keep = append(keep, o)
			continue
		}
		_ = f.mem.Free(t, o.pfn, o.src)
	}
	f.orphans = keep
	return len(f.orphans)
}

// safeRefcount is kvm_gmem_has_safe_refcount: every folio in the range is
// referenced by guest_memfd alone. It returns the first offending index.
func (f *File) safeRefcount(start, end uint64) (uint64, bool) {
	for _, k := range f.chunkKeys(start, end) {
		c := f.chunks.get(k)
		lo, hi := max(start, k<<9), min(end, (k+1)<<9)
		for i := lo; i < hi; i++ {
			if !c.present.get(i & 511) {
				continue
			}
			fo, ok := f.mem.FolioOf(c.pfn(i & 511))
			if ok && fo.Ref > 1 {
				return i, false
			}
			if c.order != 0 {
				break // one folio covers the rest of this chunk
			}
		}
	}
	return 0, true
}
