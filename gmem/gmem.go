// Package gmem models guest_memfd: the file that owns a VM's private memory
// and decides the largest size KVM may map it at.
//
// Kernel: virt/kvm/guest_memfd.c. The model follows the v6.19/v7.0 upstream
// file (order-0 folios, attributes in KVM, fallocate and punch hole, bind and
// unbind, kvm_gmem_get_pfn, kvm_gmem_populate, error_folio) plus two
// extensions from the guest_memfd HugeTLB and in-place conversion series
// (Ackerley Tng, 2025-2026): files created with FlagHugeTLB hold 2 MiB or
// 1 GiB folios from the host's hugetlb pools, and a file created InPlace
// keeps its own shared/private state per index, changed with
// KVM_SET_MEMORY_ATTRIBUTES2 on the file (SetAttributes), as seed 000 wants.
//
// An inode and its one file are one *File here: upstream creates exactly one
// file per inode (linking a second VM's file to an inode is not merged).
//
// Pages are kept per 2 MiB chunk of the file (a base PFN for huge folios, a
// 512-entry PFN array only for chunks of 4 KiB folios, and bitmaps), never as
// a Go object per page.
package gmem

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/internal/rangemap"
	"github.com/tdxsim/tdxsim/sched"
)

// PageSize is the base page size.
const PageSize = 4096

const pageShift = 12

// Creation flags (struct kvm_create_guest_memfd.flags).
const (
	// FlagMMAP is GUEST_MEMFD_FLAG_MMAP: userspace may mmap the file.
	FlagMMAP uint64 = 1 << 0
	// FlagInitShared is GUEST_MEMFD_FLAG_INIT_SHARED: memory starts shared
	// (host-accessible) instead of private.
	FlagInitShared uint64 = 1 << 1
	// FlagHugeTLB is GUEST_MEMFD_FLAG_HUGETLB from the HugeTLB series (not
	// upstream): folios come from the 2 MiB or 1 GiB hugetlb pool, chosen
	// by CreateArgs.PageOrder.
	FlagHugeTLB uint64 = 1 << 2
)

// fallocate modes (include/uapi/linux/falloc.h).
const (
	FallocKeepSize      = 0x01
	FallocPunchHole     = 0x02
	FallocNoHideStale   = 0x04
	FallocCollapseRange = 0x08
	FallocZeroRange     = 0x10
	FallocInsertRange   = 0x20
	FallocUnshareRange  = 0x40
	FallocWriteZeroes   = 0x80
)

// AttrPrivate is KVM_MEMORY_ATTRIBUTE_PRIVATE.
const AttrPrivate uint64 = 1 << 3

// Filter selects which of a VM's roots a zap touches (enum
// kvm_gfn_range_filter).
type Filter uint8

// Zap filters.
const (
	FilterShared  Filter = 1 << 0 // KVM_FILTER_SHARED: the direct (shared) root
	FilterPrivate Filter = 1 << 1 // KVM_FILTER_PRIVATE: the mirror (private) root
)

// Slot is a memslot as guest_memfd sees it: the gmem part of struct
// kvm_memory_slot. kvm implements it.
type Slot interface {
	BaseGFN() addr.GFN
	NPages() uint64
	// GmemFile is slot->gmem.file: nil when the slot has no guest_memfd
	// or the file was released.
	GmemFile() *File
	// GmemPGOff is slot->gmem.pgoff, the file index of BaseGFN.
	GmemPGOff() uint64
	// ClearGmemFile sets slot->gmem.file = NULL (kvm_gmem_release).
	ClearGmemFile()
}

// Range is a GFN range of one bound slot that an invalidation covers
// (struct kvm_gfn_range).
type Range struct {
	Slot       Slot
	Start, End addr.GFN // [Start, End)
	Filter     Filter
}

// Owner is the VM a file belongs to, as guest_memfd calls into it (struct
// kvm). kvm implements it; every method that touches the MMU takes mmu_lock
// itself (KVM_MMU_LOCK), so the lock-order checker sees
// invalidate_lock -> mmu_lock as in the kernel.
type Owner interface {
	// Account is the VM's memcg: every folio is charged to it.
	Account() hostmem.Account
	// SlotsLock is kvm->slots_lock.
	SlotsLock() *sched.Mutex
	// InvalidateBegin takes mmu_lock for write, calls
	// kvm_mmu_invalidate_begin once and kvm_mmu_invalidate_range_add for
	// each range. Called only with at least one range.
	InvalidateBegin(t *sched.Thread, ranges []Range)
	// Zap unmaps the ranges from the roots their filters select
	// (kvm_unmap_gfn_range under mmu_lock write) and flushes TLBs.
	Zap(t *sched.Thread, ranges []Range)
	// SplitPrivate splits private huge mappings that straddle the ranges'
	// edges (kvm_split_cross_boundary_leafs); an error aborts the caller.
	SplitPrivate(t *sched.Thread, ranges []Range) error
	// InvalidateEnd takes mmu_lock for write and calls
	// kvm_mmu_invalidate_end.
	InvalidateEnd(t *sched.Thread)
	// RangeIsPrivate reports whether every GFN in [start, end) has the
	// PRIVATE attribute in KVM's attribute array (vm_memory_attributes).
	RangeIsPrivate(start, end addr.GFN) bool
	// PutRef drops the reference the file holds on the VM (kvm_put_kvm).
	PutRef(t *sched.Thread)
}

// CreateArgs is struct kvm_create_guest_memfd, plus the model's choices.
type CreateArgs struct {
	Size     uint64
	Flags    uint64
	Reserved [6]uint64 // not checked by the kernel (host-kvm.md §2a)
	// PageOrder is the hugetlb page order (9 or 18) with FlagHugeTLB
	// (args->page_order in the HugeTLB series).
	PageOrder addr.Order
	// InPlace keeps shared/private state in the file, changed with
	// SetAttributes (vm_memory_attributes=false in the in-place conversion
	// series). DESIGN.md chooses the conversion mode per file.
	InPlace bool
}

// Config describes what the host supports, as KVM would report it.
type Config struct {
	// SupportedFlags is kvm_gmem_get_supported_flags() for the VM.
	SupportedFlags uint64
	// Ino is the inode number the file reports (the creator numbers its
	// files, so runs stay deterministic).
	Ino uint64
	// SplitFolioFirst is the rejected "split_order: folio_first" policy
	// (DESIGN.md, seed 002): a conversion to shared splits the huge folio
	// before the private huge mapping over it, so for a while the S-EPT
	// maps a split folio huge (and keeps doing so if the mapping's split
	// then fails). The default, false, is sept_first.
	SplitFolioFirst bool
}

// Stat is what fstat reports.
type Stat struct {
	Size    int64
	Blocks  int64 // always 0: the anon-inode guest_memfd never adds bytes (host-kvm.md §2b)
	Blksize int64
	Mode    uint32
}

// chunk records one 2 MiB range (512 indexes) of the file.
type chunk struct {
	// order is the order of the folios backing this chunk: 0 for 4 KiB
	// folios (pfns holds each), 9 for one 2 MiB folio or 18 for part of a
	// 1 GiB folio (base is the PFN of the chunk's first page).
	order    addr.Order
	base     addr.PFN
	pfns     *[512]addr.PFN
	present  bitmap // page is in the page cache
	uptodate bitmap // page was cleared or populated (PG_uptodate)
	poison   bitmap // memory failure hit the folio (PG_hwpoison)
}

type bitmap [8]uint64

func (b *bitmap) get(i uint64) bool { return b[i>>6]&(1<<(i&63)) != 0 }
func (b *bitmap) set(i uint64)      { b[i>>6] |= 1 << (i & 63) }
func (b *bitmap) clear(i uint64)    { b[i>>6] &^= 1 << (i & 63) }
func (b *bitmap) empty() bool       { return *b == bitmap{} }

type binding struct {
	start, end uint64 // file indexes [start, end)
	slot       Slot
}

// File is one guest_memfd (struct gmem_file and its gmem_inode).
type File struct {
	mem   *hostmem.Memory
	sink  event.Sink
	owner Owner
	ino   uint64

	size       uint64
	flags      uint64
	pageOrder  addr.Order
	inPlace    bool
	folioFirst bool

	invalidate *sched.RWSem // mapping->invalidate_lock

	// pc guards chunks, attrs, bindings, orphans, pages and released
	// against the fault path, which takes no invalidate lock (v6.19) and
	// may run on many vCPUs at once. It stands for what makes the
	// kernel's lookups safe there: the page cache's xarray (RCU lookups,
	// xa_lock for stores), the folio lock, and the bindings xarray. A
	// sync.Mutex, not a sched lock: nothing under it yields, so it never
	// changes the deterministic interleaving.
	pc       sync.Mutex
	chunks   map[uint64]*chunk // by index>>9
	attrs    rangemap.Map      // index -> AttrPrivate or 0
	bindings []binding         // sorted by start, disjoint
	maps     []*Mapping        // live userspace mappings
	orphans  []orphan          // truncated folios still referenced elsewhere

	refs     int  // the fd plus each mapping (a VMA holds a file reference)
	closed   bool // the fd was closed
	released bool // kvm_gmem_release ran
	pages    uint64
	version  uint64 // for content tags of userspace writes
}

// Create makes a guest_memfd for owner. Kernel: kvm_gmem_create().
// Errors, all EINVAL: a flag outside cfg.SupportedFlags; PageOrder without
// FlagHugeTLB; FlagHugeTLB with FlagInitShared or with a page order other
// than 9 or 18; size <= 0 as loff_t, or not a multiple of the page size (the
// huge page size for a HugeTLB file).
func Create(t *sched.Thread, mem *hostmem.Memory, owner Owner, cfg Config, a CreateArgs, sink event.Sink) (*File, error) {
	const op = "KVM_CREATE_GUEST_MEMFD"
	if a.Flags&^cfg.SupportedFlags != 0 {
		return nil, errno.Newf(op, errno.EINVAL, "flags %#x outside the supported %#x", a.Flags, cfg.SupportedFlags)
	}
	if a.PageOrder != 0 && a.Flags&FlagHugeTLB == 0 {
		return nil, errno.New(op, errno.EINVAL, "page_order needs GUEST_MEMFD_FLAG_HUGETLB")
	}
	if a.Flags&FlagHugeTLB != 0 {
		if a.Flags&FlagInitShared != 0 {
			return nil, errno.New(op, errno.EINVAL, "HUGETLB cannot start shared")
		}
		if a.PageOrder != addr.Order2M && a.PageOrder != addr.Order1G {
			return nil, errno.Newf(op, errno.EINVAL, "hugetlb page_order %d is neither 9 (2 MiB) nor 18 (1 GiB)", a.PageOrder)
		}
	}
	unit := uint64(PageSize) << a.PageOrder
	if int64(a.Size) <= 0 || a.Size%unit != 0 {
		return nil, errno.Newf(op, errno.EINVAL, "size %#x must be positive and a multiple of %#x", a.Size, unit)
	}
	if sink == nil {
		sink = event.Discard
	}
	f := &File{
		mem: mem, sink: sink, owner: owner, ino: cfg.Ino,
		size: a.Size, flags: a.Flags, pageOrder: a.PageOrder, inPlace: a.InPlace, folioFirst: cfg.SplitFolioFirst,
		invalidate: sched.NewRWSem("mapping.invalidate_lock"),
		chunks:     map[uint64]*chunk{},
		refs:       1,
	}
	if a.Flags&FlagInitShared == 0 {
		f.attrs.Set(0, a.Size>>pageShift, AttrPrivate)
	}
	f.emit(t, "create", a.Size, a.Flags, 0)
	return f, nil
}

func (f *File) emit(t *sched.Thread, op string, a0, a1 uint64, e errno.Errno) {
	ev := event.Event{Kind: event.KindGmem, Name: op, Args: [4]uint64{a0, a1, f.ino}, Status: uint64(e)}
	if t != nil {
		t.Stamp(&ev)
	}
	f.sink.Emit(ev)
}

// Ino returns the inode number.
func (f *File) Ino() uint64 { return f.ino }

// Size returns the file size (i_size).
func (f *File) Size() uint64 { return f.size }

// Flags returns the creation flags.
func (f *File) Flags() uint64 { return f.flags }

// PageOrder returns the folio order of a HugeTLB file, 0 otherwise.
func (f *File) PageOrder() addr.Order { return f.pageOrder }

// InPlace reports whether the file keeps its own shared/private state.
func (f *File) InPlace() bool { return f.inPlace }

// Closed reports whether the fd was closed (further file calls get EBADF).
func (f *File) Closed() bool { return f.closed }

// Released reports whether kvm_gmem_release ran (fd closed and every
// mapping gone).
func (f *File) Released() bool {
	f.pc.Lock()
	defer f.pc.Unlock()
	return f.released
}

// Pages returns the number of 4 KiB pages in the page cache.
func (f *File) Pages() uint64 {
	f.pc.Lock()
	defer f.pc.Unlock()
	return f.pages
}

// IsPrivate returns the file's own attribute for index (only meaningful for
// an InPlace file; for others it is the creation default).
func (f *File) IsPrivate(index uint64) bool {
	f.pc.Lock()
	defer f.pc.Unlock()
	return f.attrs.Get(index) == AttrPrivate
}

// RangePrivate reports whether every index in [start, end) is private in the
// file's own attributes (kvm_gmem_range_has_attributes).
func (f *File) RangePrivate(start, end uint64) bool {
	f.pc.Lock()
	defer f.pc.Unlock()
	return f.attrs.All(start, end, AttrPrivate)
}

func (f *File) badf(op string) error {
	if f.closed {
		return errno.New(op, errno.EBADF, "guest_memfd fd is closed")
	}
	return nil
}

// Fstat returns the file's status. Kernel: the anon inode's getattr.
func (f *File) Fstat() (Stat, error) {
	if err := f.badf("fstat"); err != nil {
		return Stat{}, err
	}
	return Stat{Size: int64(f.size), Blocks: 0, Blksize: PageSize, Mode: 0o100600}, nil
}

// Read models read(2): guest_memfd has no read op (EINVAL, host-kvm.md §2b).
func (f *File) Read(n int) error { return f.vfs("read", errno.EINVAL, "guest_memfd has no read") }

// Write models write(2): no write op (EINVAL).
func (f *File) Write(n int) error { return f.vfs("write", errno.EINVAL, "guest_memfd has no write") }

// Pread models pread(2): the file is not positional (ESPIPE).
func (f *File) Pread(n int, off int64) error {
	return f.vfs("pread", errno.ESPIPE, "guest_memfd is not seekable")
}

// Pwrite models pwrite(2): ESPIPE.
func (f *File) Pwrite(n int, off int64) error {
	return f.vfs("pwrite", errno.ESPIPE, "guest_memfd is not seekable")
}

// Lseek models lseek(2): ESPIPE for every whence.
func (f *File) Lseek(off int64, whence int) error {
	return f.vfs("lseek", errno.ESPIPE, "guest_memfd is not seekable")
}

// Fsync models fsync/fdatasync(2): no fsync op (EINVAL).
func (f *File) Fsync() error { return f.vfs("fsync", errno.EINVAL, "guest_memfd has no fsync") }

// Ftruncate models ftruncate(2): kvm_gmem_setattr refuses every change
// (EINVAL), even to the same size.
func (f *File) Ftruncate(size int64) error {
	return f.vfs("ftruncate", errno.EINVAL, "guest_memfd size is fixed at creation")
}

func (f *File) vfs(op string, e errno.Errno, rule string) error {
	if err := f.badf(op); err != nil {
		return err
	}
	return errno.New(op, e, rule)
}

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
	c := f.chunks[index>>9]
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
	ci, off := index>>9, index&511
	if c := f.chunks[ci]; c != nil && c.present.get(off) {
		return c.pfn(off), nil
	}
	if f.pageOrder == 0 {
		pfn, err := f.mem.Alloc(t, hostmem.Request{Order: 0, Source: hostmem.SourceBuddy, Account: f.owner.Account(), Charged: true})
		if err != nil {
			return 0, err
		}
		c := f.chunks[ci]
		if c == nil {
			c = &chunk{}
			f.chunks[ci] = c
		}
		if c.pfns == nil {
			c.pfns = new([512]addr.PFN)
		}
		c.pfns[off] = pfn
		c.present.set(off)
		f.pages++
		return pfn, nil
	}
	src := hostmem.SourceHuge2M
	if f.pageOrder == addr.Order1G {
		src = hostmem.SourceHuge1G
	}
	head, err := f.mem.Alloc(t, hostmem.Request{Order: f.pageOrder, Source: src, Account: f.owner.Account(), Charged: true})
	if err != nil {
		return 0, err
	}
	n := uint64(1) << f.pageOrder
	first := index &^ (n - 1)
	for i := uint64(0); i < n; i += 512 {
		f.chunks[(first+i)>>9] = &chunk{order: f.pageOrder, base: head + addr.PFN(i), present: full}
	}
	f.pages += n
	return head + addr.PFN(index-first), nil
}

var full = bitmap{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}

func (c *chunk) pfn(off uint64) addr.PFN {
	if c.pfns != nil {
		return c.pfns[off]
	}
	return c.base + addr.PFN(off)
}

// chunkKeys returns the indexes of present chunks overlapping [start, end),
// sorted, without ranging over the whole file when the range is small.
func (f *File) chunkKeys(start, end uint64) []uint64 {
	if start >= end {
		return nil
	}
	lo, hi := start>>9, (end-1)>>9
	var keys []uint64
	if hi-lo < uint64(len(f.chunks)) {
		for k := lo; k <= hi; k++ {
			if f.chunks[k] != nil {
				keys = append(keys, k)
			}
		}
		return keys
	}
	for k := range f.chunks {
		if k >= lo && k <= hi {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
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
// range's edges before anything is unmapped (kvm_gmem_split_private; seed
// 002: split the S-EPT before the folio).
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
		c := f.chunks[k]
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
		lo, hi := max(start, k<<9), min(end, (k+1)<<9)
		for i := lo; i < hi; i++ {
			off := i & 511
			if !c.present.get(off) {
				continue
			}
			if err := f.release1(t, c.pfns[off], hostmem.SourceBuddy); err != nil {
				return errno.Wrapf("truncate", errno.EBUSY, err, "index %#x", i)
			}
			c.present.clear(off)
			c.uptodate.clear(off)
			c.poison.clear(off)
			f.pages--
		}
		if c.present.empty() {
			delete(f.chunks, k)
		}
	}
	return nil
}

// freeHuge merges the HugeTLB folio whose first index is first (if it was
// split) and frees it to its pool.
func (f *File) freeHuge(t *sched.Thread, first uint64) error {
	n := uint64(1) << f.pageOrder
	c0 := f.chunks[first>>9]
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
		delete(f.chunks, (first+i)>>9)
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
// free anyway (seed 000: no pinning; after a failed S-EPT removal KVM_BUG_ON
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
		c := f.chunks[k]
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

// Bind attaches slot to file indexes [offset/4K, offset/4K + slot.NPages()).
// Kernel: kvm_gmem_bind() (v6.19/v7.0). Errors: offset negative as loff_t,
// unaligned, or the range past i_size; the range already bound to another
// slot (EINVAL; kvm-x86 next returns EEXIST, see DESIGN.md); a file of
// another VM (EINVAL); a closed file (EBADF). The caller holds slots_lock.
func (f *File) Bind(t *sched.Thread, owner Owner, slot Slot, offset uint64) error {
	const op = "KVM_SET_USER_MEMORY_REGION2"
	if f.closed {
		return errno.New(op, errno.EBADF, "guest_memfd is not an open fd")
	}
	if owner != f.owner {
		return errno.New(op, errno.EINVAL, "guest_memfd belongs to another VM")
	}
	size := slot.NPages() << pageShift
	if int64(offset) < 0 || offset%PageSize != 0 || offset+size > f.size || offset+size < offset {
		return errno.Newf(op, errno.EINVAL, "guest_memfd_offset %#x + size %#x must be page aligned and within the file (%#x)", offset, size, f.size)
	}
	f.invalidate.Lock(t)
	defer f.invalidate.Unlock(t)
	f.pc.Lock()
	defer f.pc.Unlock()
	start, end := offset>>pageShift, offset>>pageShift+slot.NPages()
	i := sort.Search(len(f.bindings), func(i int) bool { return f.bindings[i].end > start })
	if i < len(f.bindings) && f.bindings[i].start < end {
		b := f.bindings[i]
		return errno.Newf(op, errno.EINVAL, "guest_memfd range [%#x, %#x) overlaps a range already bound at [%#x, %#x)",
			offset, offset+size, b.start<<pageShift, b.end<<pageShift)
	}
	f.bindings = append(f.bindings, binding{})
	copy(f.bindings[i+1:], f.bindings[i:])
	f.bindings[i] = binding{start: start, end: end, slot: slot}
	return nil
}

// Unbind detaches slot (kvm_gmem_unbind, on memslot deletion). Nothing to do
// once the file was released.
func (f *File) Unbind(t *sched.Thread, slot Slot) {
	// Released takes f.pc: release sets the flag under it while a vCPU
	// thread may unbind (a memslot deleted as the file goes).
	if f.Released() {
		return
	}
	f.invalidate.Lock(t)
	defer f.invalidate.Unlock(t)
	f.pc.Lock()
	defer f.pc.Unlock()
	for i, b := range f.bindings {
		if b.slot == slot {
			f.bindings = append(f.bindings[:i], f.bindings[i+1:]...)
			break
		}
	}
}

// boundSlot returns the slot bound at index (xa_load(&f->bindings, index)).
// The caller holds f.pc or the invalidate lock.
func (f *File) boundSlot(index uint64) Slot {
	i := sort.Search(len(f.bindings), func(i int) bool { return f.bindings[i].end > index })
	if i < len(f.bindings) && f.bindings[i].start <= index {
		return f.bindings[i].slot
	}
	return nil
}

// Close closes the fd. The file is released (kvm_gmem_release) when the last
// reference goes: the fd and every userspace mapping each hold one.
func (f *File) Close(t *sched.Thread) error {
	if f.closed {
		return errno.New("close", errno.EBADF, "guest_memfd fd already closed")
	}
	f.closed = true
	f.put(t)
	return nil
}

func (f *File) put(t *sched.Thread) {
	f.refs--
	if f.refs == 0 {
		f.release(t)
	}
}

// release is kvm_gmem_release followed by the inode's eviction: under
// slots_lock and the exclusive invalidate lock, every bound slot forgets the
// file, everything the file mapped is zapped, the bindings go and the VM
// reference is dropped; then every folio is freed.
func (f *File) release(t *sched.Thread) {
	sl := f.owner.SlotsLock()
	sl.Lock(t)
	f.invalidate.Lock(t)
	for _, b := range f.bindings {
		b.slot.ClearGmemFile()
	}
	begun := f.invalidateBegin(t, 0, ^uint64(0))
	f.zap(t, 0, ^uint64(0))
	f.invalidateEnd(t, begun)
	f.pc.Lock()
	f.bindings = nil
	f.released = true
	f.pc.Unlock()
	f.invalidate.Unlock(t)
	sl.Unlock(t)
	f.owner.PutRef(t)
	// Eviction (kvm_gmem_evict_inode): the pages go with the inode.
	f.invalidate.Lock(t)
	_ = f.truncate(t, 0, f.size>>pageShift, false)
	f.Reap(t)
	f.invalidate.Unlock(t)
	f.emit(t, "release", 0, f.size, 0)
}

// Describe names the file for messages.
func (f *File) String() string { return fmt.Sprintf("guest_memfd ino %d (%#x bytes)", f.ino, f.size) }
