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
// KVM_SET_MEMORY_ATTRIBUTES2 on the file (SetAttributes).
//
// An inode and its one file are one *File here: upstream creates exactly one
// file per inode (linking a second VM's file to an inode is not merged).
//
// Pages are kept per 2 MiB chunk of the file (a base PFN for huge folios, a
// 512-entry PFN array of 4 bytes a page only for chunks of 4 KiB folios, and
// bitmaps that cost nothing while all clear or all set), never as a Go
// object per page.
package gmem

import (
	"sync"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/internal/fd"
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
	Reserved [6]uint64 // not checked by the kernel (the real kernel, per kvmhost's differential tests)
	// PageOrder is the hugetlb page order (9 or 18) with FlagHugeTLB
	// (args->page_order in the HugeTLB series).
	PageOrder addr.Order
	// InPlace keeps shared/private state in the file, changed with
	// SetAttributes (vm_memory_attributes=false in the in-place conversion
	// series). docs/policies.md chooses the conversion mode per file.
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
	// (docs/policies.md): a conversion to shared splits the huge folio
	// before the private huge mapping over it, so for a while the S-EPT
	// maps a split folio huge (and keeps doing so if the mapping's split
	// then fails). The default, false, is sept_first.
	SplitFolioFirst bool
	// ContentModes, when set, is the VM's content-mode support: the file's
	// KVM_SET_MEMORY_ATTRIBUTES2 takes ZERO and PRESERVE (RFC v5 of the
	// in-place conversion series). Nil: flags must be 0.
	ContentModes ContentModesFunc
}

// Stat is what fstat reports.
type Stat struct {
	Size    int64
	Blocks  int64 // always 0: the anon-inode guest_memfd never adds bytes (the real kernel, per kvmhost's differential tests)
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
	pfns     pfnArray // order 0: each index's PFN (pages.go)
	present  bitmap   // page is in the page cache
	uptodate bitmap   // page was cleared or populated (PG_uptodate)
	poison   bitmap   // memory failure hit the folio (PG_hwpoison)
}

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
	// contentModes is Config.ContentModes.
	contentModes ContentModesFunc

	invalidate *sched.RWSem // mapping->invalidate_lock

	// pc guards chunks, attrs, bindings, orphans, pages and released
	// against the fault path, which takes no invalidate lock (v6.19) and
	// may run on many vCPUs at once. It stands for what makes the
	// kernel's lookups safe there: the page cache's xarray (RCU lookups,
	// xa_lock for stores), the folio lock, and the bindings xarray. A
	// sync.Mutex, not a sched lock: nothing under it yields, so it never
	// changes the deterministic interleaving.
	pc       sync.Mutex
	chunks   chunkTable   // by index>>9
	attrs    rangemap.Map // index -> AttrPrivate or 0
	bindings []binding    // sorted by start, disjoint
	maps     []*Mapping   // live userspace mappings
	orphans  []orphan     // truncated folios still referenced elsewhere

	refs     int      // the fd plus each mapping (a VMA holds a file reference)
	fd       fd.State // the guest_memfd fd itself
	released bool     // kvm_gmem_release ran
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
		size: a.Size, flags: a.Flags, pageOrder: a.PageOrder, inPlace: a.InPlace, folioFirst: cfg.SplitFolioFirst, contentModes: cfg.ContentModes,
		invalidate: sched.NewRWSem("mapping.invalidate_lock"),
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
func (f *File) Closed() bool { return f.fd.Closed() }

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
