package gmem

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/sched"
)

// Fallocate allocates or punches a range. Kernel: vfs_fallocate() then
// kvm_gmem_fallocate(). Errors in the kernel's order: offset < 0 or len <= 0
// (EINVAL); a mode vfs_fallocate refuses or one other than KEEP_SIZE and
// KEEP_SIZE|PUNCH_HOLE (EOPNOTSUPP); offset+len past the largest file size
// (EFBIG); offset or len not aligned to the file's page size (EINVAL);
// allocation past i_size (EINVAL); a folio allocation failure (ENOMEM).
// Punching past i_size succeeds and does nothing there.
func (f *File) Fallocate(t *sched.Thread, mode uint32, offset, length int64) error {
	op := "fallocate"
	if mode&FallocPunchHole != 0 {
		op = "fallocate(PUNCH_HOLE)"
	}
	err := f.fallocate(t, op, mode, offset, length)
	f.emit(t, op, uint64(offset), uint64(length), errno.Of(err))
	return err
}

func (f *File) fallocate(t *sched.Thread, op string, mode uint32, offset, length int64) error {
	if err := f.badf(op); err != nil {
		return err
	}
	// vfs_fallocate (fs/open.c).
	if offset < 0 || length <= 0 {
		return errno.Newf(op, errno.EINVAL, "offset %d and len %d must be >= 0 and > 0", offset, length)
	}
	const modeMask = FallocPunchHole | FallocCollapseRange | FallocZeroRange | FallocInsertRange | FallocUnshareRange | FallocWriteZeroes
	switch mode & modeMask {
	case 0, FallocUnshareRange, FallocZeroRange:
	case FallocPunchHole:
		if mode&FallocKeepSize == 0 {
			return errno.New(op, errno.EOPNOTSUPP, "PUNCH_HOLE needs KEEP_SIZE")
		}
	case FallocCollapseRange, FallocInsertRange, FallocWriteZeroes:
		if mode&FallocKeepSize != 0 {
			return errno.New(op, errno.EOPNOTSUPP, "this mode cannot take KEEP_SIZE")
		}
	default:
		return errno.Newf(op, errno.EOPNOTSUPP, "mode %#x combines exclusive modes", mode)
	}
	if mode&^(modeMask|FallocKeepSize) != 0 {
		return errno.Newf(op, errno.EOPNOTSUPP, "unknown mode bits %#x", mode)
	}
	if uint64(offset)+uint64(length) > 1<<63-1 {
		return errno.New(op, errno.EFBIG, "offset+len past the largest file size")
	}
	// kvm_gmem_fallocate.
	if mode&FallocKeepSize == 0 {
		return errno.New(op, errno.EOPNOTSUPP, "guest_memfd needs KEEP_SIZE")
	}
	if mode&^(FallocKeepSize|FallocPunchHole) != 0 {
		return errno.Newf(op, errno.EOPNOTSUPP, "guest_memfd supports only allocate and PUNCH_HOLE, not mode %#x", mode)
	}
	unit := int64(PageSize) << f.pageOrder
	if offset%unit != 0 || length%unit != 0 {
		return errno.Newf(op, errno.EINVAL, "offset %#x and len %#x must be multiples of %#x", offset, length, unit)
	}
	if mode&FallocPunchHole != 0 {
		return f.punchHole(t, uint64(offset)>>pageShift, uint64(offset+length)>>pageShift)
	}
	return f.allocate(t, uint64(offset), uint64(length))
}

// allocate is kvm_gmem_allocate: under the shared invalidate lock, get (or
// create) every folio of the range, neither zeroed nor marked up to date.
func (f *File) allocate(t *sched.Thread, offset, length uint64) error {
	if offset+length > f.size {
		return errno.Newf("fallocate", errno.EINVAL, "range [%#x, %#x) past i_size %#x", offset, offset+length, f.size)
	}
	f.invalidate.RLock(t)
	defer f.invalidate.RUnlock(t)
	f.pc.Lock()
	defer f.pc.Unlock()
	for index := offset >> pageShift; index < (offset+length)>>pageShift; {
		if _, err := f.getFolio(t, index); err != nil {
			return errno.Wrapf("fallocate", errno.ENOMEM, err, "folio for index %#x", index)
		}
		index = f.folioEnd(index)
	}
	return nil
}

// folioEnd returns the index after the folio holding index.
func (f *File) folioEnd(index uint64) uint64 {
	c := f.chunks.get(index >> 9)
	if c == nil || c.order == 0 {
		return index + 1
	}
	n := uint64(1) << c.order
	return (index &^ (n - 1)) + n
}

// getFolio returns the PFN backing index, allocating its folio when absent
// (kvm_gmem_get_folio / __filemap_get_folio(FGP_CREAT)). The caller holds
// f.pc.
func (f *File) getFolio(t *sched.Thread, index uint64) (addr.PFN, error) {
	_, pfn, _, err := f.folioChunk(t, index, false)
	return pfn, err
}

// folioChunk is getFolio that also returns the chunk holding index, so the
// fault path looks the page cache up once (one xarray walk in
// __filemap_get_folio). With get, a folio it creates comes with the
// caller's reference as well (folio_get, in the allocation's lock round),
// and fresh says so; an existing folio gets none here. The caller holds
// f.pc.
func (f *File) folioChunk(t *sched.Thread, index uint64, get bool) (c *chunk, pfn addr.PFN, fresh bool, err error) {
	ci, off := index>>9, index&511
	c = f.chunks.get(ci)
	if c != nil && c.present.get(off) {
		return c, c.pfn(off), false, nil
	}
	if f.pageOrder == 0 {
		pfn, err := f.mem.Alloc(t, hostmem.Request{Order: 0, Source: hostmem.SourceBuddy, Account: f.owner.Account(), Charged: true, GetRef: get})
		if err != nil {
			return nil, 0, false, err
		}
		if c == nil {
			c = f.chunks.alloc(chunk{})
			f.chunks.set(ci, c)
		}
		c.pfns.set(off, pfn)
		c.present.set(off)
		f.pages++
		return c, pfn, true, nil
	}
	src := hostmem.SourceHuge2M
	if f.pageOrder == addr.Order1G {
		src = hostmem.SourceHuge1G
	}
	head, err := f.mem.Alloc(t, hostmem.Request{Order: f.pageOrder, Source: src, Account: f.owner.Account(), Charged: true, GetRef: get})
	if err != nil {
		return nil, 0, false, err
	}
	n := uint64(1) << f.pageOrder
	first := index &^ (n - 1)
	for i := uint64(0); i < n; i += 512 {
		f.chunks.set((first+i)>>9, f.chunks.alloc(chunk{order: f.pageOrder, base: head + addr.PFN(i), present: full}))
	}
	f.pages += n
	return f.chunks.get(ci), head + addr.PFN(index-first), true, nil
}

func (c *chunk) pfn(off uint64) addr.PFN {
	if c.pfns.held() {
		return c.pfns.get(off)
	}
	return c.base + addr.PFN(off)
}

// chunkKeys returns the indexes of present chunks overlapping [start, end),
// sorted.
func (f *File) chunkKeys(start, end uint64) []uint64 {
	if start >= end {
		return nil
	}
	return f.chunks.keys(start>>9, (end-1)>>9)
}

// ranges returns, for each binding overlapping file indexes [start, end),
// the GFN range it maps (clipped to the slot), in index order.
func (f *File) ranges(start, end uint64, filter Filter) []Range {
	var out []Range
	for _, b := range f.bindings {
		if b.end <= start || b.start >= end {
			continue
		}
		s, e := max(b.start, start), min(b.end, end)
		base := b.slot.BaseGFN()
		out = append(out, Range{Slot: b.slot, Start: base + addr.GFN(s-b.start), End: base + addr.GFN(e-b.start), Filter: filter})
	}
	return out
}
