package gmem

import (
	"errors"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/sched"
)

// Index returns the file index of gfn in slot (kvm_gmem_get_index).
func Index(slot Slot, gfn addr.GFN) uint64 {
	return uint64(gfn-slot.BaseGFN()) + slot.GmemPGOff()
}

// PFN is what GetPFN hands out: the page and the largest order the folio
// holding it has (the kernel's max_order out-parameter).
type PFN struct {
	PFN      addr.PFN
	MaxOrder addr.Order
}

// GetPFN returns the page backing gfn, creating and clearing it if needed,
// with a reference held that the caller drops with hostmem's Put once the
// page is mapped (kvm_release_faultin_page). Kernel: kvm_gmem_get_pfn().
//
// The invalidate lock is not taken (v6.19): a racing truncation is caught
// by the MMU invalidation sequence. An in-place file (the in-place
// conversion series) takes it shared, so that the page's
// shared/private state cannot change under the lookup. Errors: no file or
// a released one (EFAULT); the index bound to another slot (EIO); a
// poisoned folio (EHWPOISON); no memory (ENOMEM).
func GetPFN(t *sched.Thread, slot Slot, gfn addr.GFN) (PFN, error) {
	const op = "kvm_gmem_get_pfn"
	f := slot.GmemFile()
	if f == nil {
		return PFN{}, errno.New(op, errno.EFAULT, "memslot has no live guest_memfd")
	}
	if f.inPlace {
		f.invalidate.RLock(t) // filemap_invalidate_lock_shared
		defer f.invalidate.RUnlock(t)
	}
	f.pc.Lock()
	defer f.pc.Unlock()
	if f.released {
		return PFN{}, errno.New(op, errno.EFAULT, "memslot has no live guest_memfd")
	}
	index := Index(slot, gfn)
	if f.boundSlot(index) != slot {
		return PFN{}, errno.Newf(op, errno.EIO, "index %#x is not bound to this memslot", index)
	}
	// A 4K folio created here comes with the fault's reference.
	c, pfn, fresh, err := f.folioChunk(t, index, f.pageOrder == 0)
	if err != nil {
		return PFN{}, errno.Wrapf(op, errno.ENOMEM, err, "index %#x", index)
	}
	if fresh && f.pageOrder == 0 {
		if f.poisonedIn(c, index) { // truncation clears the bit: never
			_ = f.mem.Put(t, pfn)
			return PFN{}, errno.Newf(op, errno.EHWPOISON, "index %#x is in a hwpoisoned folio", index)
		}
		// A page just allocated holds zeros (hostmem's Alloc): up to
		// date without a clear, and no second lookup.
		c.uptodate.set(index & 511)
		return PFN{PFN: pfn, MaxOrder: 0}, nil
	}
	if f.poisonedIn(c, index) {
		return PFN{}, errno.Newf(op, errno.EHWPOISON, "index %#x is in a hwpoisoned folio", index)
	}
	// clear_highpage + folio_mark_uptodate: the guest never sees stale
	// host data. A 4K page is cleared in the same hostmem round as
	// folio_get + folio_order.
	clear := false
	if !c.uptodate.get(index & 511) {
		if c.order == 0 {
			clear = true
		} else {
			f.clearFolio(t, index)
		}
	}
	fo, err := f.mem.ClearGetFolio(t, pfn, clear)
	if err != nil {
		return PFN{}, err
	}
	if clear {
		c.uptodate.set(index & 511)
	}
	return PFN{PFN: pfn, MaxOrder: fo.Order}, nil
}

// folioOrder is the order of the folio holding pfn (folio_order()).
func (c *chunk) folioOrder(mem *hostmem.Memory, pfn addr.PFN) addr.Order {
	if fo, ok := mem.FolioOf(pfn); ok {
		return fo.Order
	}
	return c.order
}

// clearFolio clears and marks up to date the whole huge folio holding index.
func (f *File) clearFolio(t *sched.Thread, index uint64) {
	c := f.chunks.get(index >> 9)
	n := uint64(1) << c.order
	first := index &^ (n - 1)
	head := f.chunks.get(first >> 9).base
	for i := uint64(0); i < n; i += 512 {
		ch := f.chunks.get((first + i) >> 9)
		base := head + addr.PFN(i)
		switch {
		case ch.uptodate.empty() && n >= 512:
			_ = f.mem.FillTag(t, base, min(c.order, 9), 0)
		default:
			// Pages populated or cleared while the folio was split (or
			// by kvm_gmem_populate) keep their contents: only the
			// rest is cleared (the kernel's uptodate is per folio; a
			// folio restored from pieces is as up to date as they were).
			for k := uint64(0); k < min(n, 512); k++ {
				if !ch.uptodate.get(k) {
					_ = f.mem.SetTag(t, base+addr.PFN(k), 0)
				}
			}
		}
		ch.uptodate = full
	}
}

func (f *File) poisoned(index uint64) bool { return f.poisonedIn(f.chunks.get(index>>9), index) }

// poisonedIn is poisoned with index's chunk c already looked up.
func (f *File) poisonedIn(c *chunk, index uint64) bool {
	if c == nil {
		return false
	}
	if c.order == 0 {
		return c.poison.get(index & 511)
	}
	// A huge folio is poisoned as a whole (folio_test_hwpoison on a
	// hugetlb folio).
	n := uint64(1) << c.order
	first := index &^ (n - 1)
	for i := uint64(0); i < n; i += 512 {
		if !f.chunks.get((first + i) >> 9).poison.empty() {
			return true
		}
	}
	return false
}

// MappingOrder is the largest order KVM may map at gfn of slot, as if
// GetPFN were called now, without allocating. guest_memfd is the owner of
// this answer; callers must not derive it from a folio. Kernel:
// kvm_gmem_mapping_order() (HugeTLB series). It is 0 for a file of 4 KiB
// folios; for a HugeTLB file it is the largest order (the page order, or 9
// inside a 1 GiB file) whose aligned range of indexes is private, backed
// by a folio at least that large, inside the file and inside the binding,
// and lines up with the GFNs (gfn and index agree modulo the order). The
// last rule is the one a folio's order cannot express: a binding at an
// offset that is not aligned with its GFNs gets 0 even over a huge folio.
func MappingOrder(slot Slot, gfn addr.GFN) addr.Order {
	f := slot.GmemFile()
	if f == nil || f.pageOrder == 0 {
		return 0
	}
	f.pc.Lock()
	defer f.pc.Unlock()
	if f.released {
		return 0
	}
	index := Index(slot, gfn)
	orders := []addr.Order{f.pageOrder}
	if f.pageOrder == addr.Order1G {
		orders = append(orders, addr.Order2M)
	}
	for _, o := range orders {
		n := uint64(1) << o
		first := index &^ (n - 1)
		if (uint64(gfn)^index)&(n-1) != 0 || first+n > f.size>>pageShift || !f.attrs.All(first, first+n, AttrPrivate) {
			continue
		}
		if gfirst := gfn - addr.GFN(index-first); gfirst < slot.BaseGFN() || uint64(gfirst-slot.BaseGFN())+n > slot.NPages() {
			continue
		}
		if c := f.chunks.get(index >> 9); c != nil && c.order < o {
			continue
		}
		return o
	}
	return 0
}

// PostPopulate is the callback kvm_gmem_populate runs for each page with the
// private PFN and the source page (zero when there is none).
type PostPopulate func(t *sched.Thread, gfn addr.GFN, pfn addr.PFN, src addr.PFN) error

// SourcePage pins the i-th source page of a populate call
// (get_user_pages_fast); it returns the page and a function to unpin it.
type SourcePage func(t *sched.Thread, i int64) (addr.PFN, func(), error)

// Populate fills private pages of slot from source pages through cb.
// Kernel: kvm_gmem_populate() (v7.0: source GUP'd before the invalidate
// lock, which is taken exclusively per page). The caller holds slots_lock.
// npages is clamped to the end of the slot. Returns the number of pages
// done, or the error when none was (ret && !i ? ret : i). Errors: npages
// <= 0 (EINVAL), a slot without guest_memfd (EINVAL), a released file
// (EFAULT), a GFN that is not private (EINVAL), or what cb returns.
func Populate(t *sched.Thread, slot Slot, start addr.GFN, src SourcePage, npages int64, cb PostPopulate) (int64, error) {
	const op = "kvm_gmem_populate"
	if npages <= 0 {
		return 0, errno.Newf(op, errno.EINVAL, "npages %d", npages)
	}
	if slot == nil {
		return 0, errno.New(op, errno.EINVAL, "no memslot with guest_memfd at the GFN")
	}
	f := slot.GmemFile()
	if f == nil || f.Released() {
		return 0, errno.New(op, errno.EFAULT, "memslot's guest_memfd was released")
	}
	npages = min(npages, int64(slot.NPages()-uint64(start-slot.BaseGFN())))
	var i int64
	var err error
	for i = 0; i < npages; i++ {
		var srcPFN addr.PFN
		unpin := func() {}
		if src != nil {
			if srcPFN, unpin, err = src(t, i); err != nil {
				break
			}
		}
		err = f.populateOne(t, slot, start+addr.GFN(i), srcPFN, cb)
		unpin()
		if err != nil {
			break
		}
	}
	if err != nil && i == 0 {
		return 0, err
	}
	return i, nil
}

func (f *File) populateOne(t *sched.Thread, slot Slot, gfn addr.GFN, src addr.PFN, cb PostPopulate) error {
	const op = "kvm_gmem_populate"
	f.invalidate.Lock(t)
	defer f.invalidate.Unlock(t)
	index := Index(slot, gfn)
	pfn, err := f.lookupForPopulate(t, slot, index)
	if err != nil {
		return err
	}
	private := f.owner.RangeIsPrivate(gfn, gfn+1)
	if f.inPlace {
		private = f.RangePrivate(index, index+1)
	}
	if !private {
		return errno.Newf(op, errno.EINVAL, "GFN %#x is not private", uint64(gfn))
	}
	if err := f.mem.Get(pfn); err != nil {
		return err
	}
	defer f.mem.Put(t, pfn)
	if err := cb(t, gfn, pfn, src); err != nil {
		return err
	}
	f.pc.Lock()
	f.chunks.get(index >> 9).uptodate.set(index & 511)
	f.pc.Unlock()
	return nil
}

// lookupForPopulate is populateOne's page-cache half: the binding, the
// folio (created if absent) and its poison bit, under f.pc.
func (f *File) lookupForPopulate(t *sched.Thread, slot Slot, index uint64) (addr.PFN, error) {
	const op = "kvm_gmem_populate"
	f.pc.Lock()
	defer f.pc.Unlock()
	if f.boundSlot(index) != slot {
		return 0, errno.Newf(op, errno.EIO, "index %#x is not bound to this memslot", index)
	}
	pfn, err := f.getFolio(t, index)
	if err != nil {
		return 0, errno.Wrapf(op, errno.ENOMEM, err, "index %#x", index)
	}
	if f.poisoned(index) {
		return 0, errno.Newf(op, errno.EHWPOISON, "index %#x is hwpoisoned", index)
	}
	return pfn, nil
}

// MemoryFailure handles a hardware memory error on the folio holding index.
// Kernel: kvm_gmem_error_folio(): under the shared invalidate lock, zap
// every mapping of the folio's range, do not truncate; later GetPFN there
// returns EHWPOISON. It returns MF_DELAYED's meaning: userspace decides.
func (f *File) MemoryFailure(t *sched.Thread, index uint64) error {
	const op = "memory_failure"
	f.pc.Lock()
	c := f.chunks.get(index >> 9)
	if c == nil || !c.present.get(index&511) {
		f.pc.Unlock()
		return errno.Newf(op, errno.ENOENT, "index %#x has no folio", index)
	}
	n := uint64(1) << c.order
	start := index &^ (n - 1)
	c.poison.set(index & 511)
	f.pc.Unlock()
	f.invalidate.RLock(t)
	defer f.invalidate.RUnlock(t)
	begun := f.invalidateBegin(t, start, start+n)
	f.zap(t, start, start+n)
	f.invalidateEnd(t, begun)
	f.emit(t, "memory_failure", index<<pageShift, n<<pageShift, 0)
	return nil
}

// PFNAt returns the page at index if present (for checks and tests; no
// reference is taken).
func (f *File) PFNAt(index uint64) (addr.PFN, bool) {
	f.pc.Lock()
	defer f.pc.Unlock()
	c := f.chunks.get(index >> 9)
	if c == nil || !c.present.get(index&511) {
		return 0, false
	}
	return c.pfn(index & 511), true
}

// SetAttributes converts [offset, offset+size) of an in-place file to
// private (attrs = AttrPrivate) or shared (attrs = 0), with the content
// mode flags (ContentZero, ContentPreserve, or 0 for the default). Kernel:
// KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd, kvm_gmem_set_attributes()
// (in-place conversion series). Errors: a file not in in-place mode
// (ENOTTY: vm_memory_attributes); flags (EINVAL: any flag without content
// modes, else an unknown bit or ZERO with PRESERVE; checkContentFlags); a
// content mode the VM does not support for the direction (EOPNOTSUPP with
// the offset of the range, nothing converted; contentSupported); the
// mode is applied to the whole range even when it already has the
// attributes (applyContent); unsupported attributes
// (EINVAL); size 0, wrap, unaligned, or past i_size (EINVAL); a folio in the
// range referenced by anyone but guest_memfd when going private (EAGAIN,
// with the offset of that folio); a failed split of a private huge mapping
// or folio (the split's error). Nothing changes on error in the batch that
// failed; earlier batches (one huge page each) stay converted, as in the
// kernel.
func (f *File) SetAttributes(t *sched.Thread, offset, size, attrs, flags uint64) (errOffset uint64, err error) {
	const op = "KVM_SET_MEMORY_ATTRIBUTES2"
	if err := f.badf(op); err != nil {
		return 0, err
	}
	if !f.inPlace {
		return 0, errno.New(op, errno.ENOTTY, "guest_memfd is not in in-place conversion mode")
	}
	if err := f.checkContentFlags(op, flags); err != nil {
		return 0, err
	}
	switch {
	case attrs&^AttrPrivate != 0:
		return 0, errno.Newf(op, errno.EINVAL, "attributes %#x: only PRIVATE (%#x) is supported", attrs, AttrPrivate)
	case size == 0 || offset+size < offset:
		return 0, errno.New(op, errno.EINVAL, "size is zero or offset+size wraps")
	case offset%PageSize != 0 || size%PageSize != 0:
		return 0, errno.New(op, errno.EINVAL, "offset and size must be page aligned")
	case offset >= f.size || offset+size > f.size:
		return 0, errno.Newf(op, errno.EINVAL, "range [%#x, %#x) past i_size %#x", offset, offset+size, f.size)
	}
	start, end := offset>>pageShift, (offset+size)>>pageShift
	f.invalidate.Lock(t)
	defer f.invalidate.Unlock(t)
	if !f.contentSupported(flags, attrs == AttrPrivate) {
		f.emit(t, "convert", offset, size, errno.EOPNOTSUPP)
		return offset, errno.Newf(op, errno.EOPNOTSUPP, "content mode %#x is not supported for attributes %#x now", flags, attrs)
	}
	if f.attrs.All(start, end, attrs) {
		f.applyContent(t, flags, start, end)
		return 0, nil
	}
	batch := uint64(1) << f.pageOrder
	if f.pageOrder == 0 {
		batch = f.size >> pageShift
	}
	for b := start; b < end; {
		be := min((b/batch+1)*batch, end)
		if idx, err := f.convert(t, b, be, attrs, flags); err != nil {
			f.emit(t, "convert", idx<<pageShift, size, errno.Of(err))
			return idx << pageShift, err
		}
		b = be
	}
	name := "convert_shared"
	if attrs == AttrPrivate {
		name = "convert_private"
	}
	f.emit(t, name, offset, size, 0)
	return 0, nil
}

// convert is kvm_gmem_convert for one batch inside one huge page; the
// content mode is applied after the zap, before the attributes change.
func (f *File) convert(t *sched.Thread, start, end, attrs, flags uint64) (uint64, error) {
	const op = "KVM_SET_MEMORY_ATTRIBUTES2"
	toPrivate := attrs == AttrPrivate
	if toPrivate {
		f.unmapUser(t, start, end)
		f.pc.Lock()
		idx, ok := f.safeRefcount(start, end)
		var ref int32
		if !ok {
			fo, _ := f.mem.FolioOf(f.chunks.get(idx >> 9).pfn(idx & 511))
			ref = fo.Ref
		}
		f.pc.Unlock()
		if !ok {
			return idx, errno.Newf(op, errno.EAGAIN, "folio at offset %#x has an unexpected reference (refcount %d)", idx<<pageShift, ref)
		}
	}
	n := uint64(1) << f.pageOrder
	invStart, invEnd := start&^(n-1), (end+n-1)&^(n-1)
	begun := f.invalidateBegin(t, invStart, invEnd)
	// The folio changes and the attributes are stored before the
	// invalidation ends, so no fault maps the range from the old state.
	defer f.invalidateEnd(t, begun)
	if !toPrivate {
		if f.folioFirst {
			// split_order=folio_first: the folio is split while the
			// S-EPT may still map it huge.
			if err := f.restructure(t, start, end, false); err != nil {
				return start, err
			}
		}
		if err := f.splitPrivate(t, start, end); err != nil {
			return start, errno.Wrapf(op, errno.Of(err), err, "splitting private mappings")
		}
	}
	f.zap(t, start, end)
	if err := f.restructure(t, start, end, toPrivate); err != nil {
		return start, err
	}
	f.applyContent(t, flags, start, end)
	f.pc.Lock()
	f.attrs.Set(start, end, attrs)
	f.pc.Unlock()
	return 0, nil
}

// restructure is kvm_gmem_restructure: a HugeTLB folio is split to 4 KiB
// folios when any of it becomes shared (userspace maps shared memory at
// 4 KiB), and merged back when all of it is private again.
func (f *File) restructure(t *sched.Thread, start, end uint64, toPrivate bool) error {
	if f.pageOrder == 0 {
		return nil
	}
	f.pc.Lock()
	defer f.pc.Unlock()
	n := uint64(1) << f.pageOrder
	first := start &^ (n - 1)
	c0 := f.chunks.get(first >> 9)
	if c0 == nil {
		return nil // no folio yet: nothing to restructure
	}
	head := c0.pfn(0)
	if toPrivate {
		allPrivate := f.attrs.All(first, start, AttrPrivate) && f.attrs.All(end, first+n, AttrPrivate)
		if !allPrivate || c0.order == f.pageOrder {
			return nil
		}
		if err := f.mem.MergeFolio(t, head, f.pageOrder); err != nil {
			return errno.Wrapf("KVM_SET_MEMORY_ATTRIBUTES2", errno.EAGAIN, err, "merging folio at %#x", first<<pageShift)
		}
		for i := uint64(0); i < n; i += 512 {
			c := f.chunks.get((first + i) >> 9)
			c.order, c.base = f.pageOrder, head+addr.PFN(i)
			c.pfns = pfnArray{}
		}
		f.emit(t, "merge_folio", first<<pageShift, n<<pageShift, 0)
		return nil
	}
	if c0.order == 0 {
		return nil // already split
	}
	if err := f.mem.SplitFolio(t, head, 0); err != nil {
		if errors.Is(err, hostmem.ErrNoMemory) {
			return errno.Wrapf("KVM_SET_MEMORY_ATTRIBUTES2", errno.ENOMEM, err, "splitting folio")
		}
		return errno.Wrapf("KVM_SET_MEMORY_ATTRIBUTES2", errno.EAGAIN, err, "splitting folio at %#x", first<<pageShift)
	}
	for i := uint64(0); i < n; i += 512 {
		c := f.chunks.get((first + i) >> 9)
		c.order = 0 // pages keep their PFNs: base + offset
	}
	f.emit(t, "split_folio", first<<pageShift, n<<pageShift, 0)
	return nil
}

// PageInfo is one page's state, for views and checks.
type PageInfo struct {
	Present, Uptodate, Poisoned, Private bool
	PFN                                  addr.PFN
	FolioOrder                           addr.Order
}

// Page returns the state of index.
func (f *File) Page(index uint64) PageInfo {
	f.pc.Lock()
	defer f.pc.Unlock()
	pi := PageInfo{Private: f.attrs.Get(index) == AttrPrivate}
	c := f.chunks.get(index >> 9)
	if c == nil || !c.present.get(index&511) {
		return pi
	}
	pi.Present, pi.Uptodate, pi.Poisoned = true, c.uptodate.get(index&511), f.poisoned(index)
	pi.PFN = c.pfn(index & 511)
	pi.FolioOrder = c.folioOrder(f.mem, pi.PFN)
	return pi
}
