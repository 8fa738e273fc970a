package kernel

// RefcountArray is how the kernel sizes its Dynamic PAMT refcounts: one
// atomic_t (4 bytes) per 2 MiB of physical address space, which
// tdx_pamt_get()/tdx_pamt_put() use to install a range's page pair on
// 0 -> 1 and remove it on 1 -> 0.
type RefcountArray uint8

const (
	// RefcountNone: static PAMT, no refcounts (6.19, 7.0).
	RefcountNone RefcountArray = iota
	// RefcountSparse: a vmalloc range reserved from 0 to max_pfn but
	// populated with pages only over the memory TDX can use. Series:
	// "[PATCH v4 06/16] x86/virt/tdx: Improve PAMT refcounts allocation
	// for sparse memory" (20251121005125.417831-7-rick.p.edgecombe@intel.com):
	// alloc_pamt_refcount(start_pfn, end_pfn) per TDX memory block from
	// build_tdx_memlist().
	RefcountSparse
	// RefcountMaxPFN: one zeroed __vmalloc of
	// DIV_ROUND_UP(max_pfn, PTRS_PER_PTE) * sizeof(atomic_t), "2 MB for
	// every 1 TB of address space from 0 to max_pfn", 8 GB when the
	// whole 52-bit address space is covered. Series: "[PATCH v6 04/11]
	// x86/virt/tdx: Allocate ref counts for Dynamic PAMT memory"
	// (init_pamt_refcounts()); the v6 cover letter drops v4's sparse
	// optimisation.
	RefcountMaxPFN
)

// String names the layout as docs/kernels.md does.
func (r RefcountArray) String() string {
	switch r {
	case RefcountSparse:
		return "sparse"
	case RefcountMaxPFN:
		return "max_pfn"
	}
	return "none"
}

// refcountBytes is sizeof(atomic_t); refcountSpan the physical bytes one
// refcount covers (PMD_SIZE).
const (
	refcountBytes = 4
	refcountSpan  = 2 << 20
	pageBytes     = 4096
)

// MaxPhysAddrBits is the x86 architectural maximum physical address width
// (MAXPHYADDR 52): the "entire 52-bit address space" of v6 patch 04's worst
// case.
const MaxPhysAddrBits = 52

// DPAMTMaxPhysBits is the widest host physical address Dynamic PAMT v6
// runs on: tdx_supports_dynamic_pamt() also requires
// boot_cpu_data.x86_phys_bits <= 48, because the TDX module's Dynamic
// PAMT tree covers 48 bits. Series: "[PATCH v6 10/11] x86/virt/tdx:
// Enable Dynamic PAMT". A host whose max_pfn lies above 2^48 has
// x86_phys_bits > 48, so under v6 it gets no Dynamic PAMT at all: the
// cover letter's "256GB (max_pfn at maxpa) 8.01 GB" row (52 bits) is a
// host patch 10 turns Dynamic PAMT off on.
const DPAMTMaxPhysBits = 48

// RefcountArrayBytes is the kernel memory the refcounts take on a host
// with ramBytes of memory contiguous from 0 and its highest page ending at
// maxPFNAddr (max_pfn << PAGE_SHIFT, at least ramBytes). Sparse: the
// vmalloc pages that hold the refcounts of [0, ramBytes); max_pfn: the
// whole array, rounded up to pages as vmalloc allocates them.
func RefcountArrayBytes(r RefcountArray, ramBytes, maxPFNAddr uint64) uint64 {
	span := uint64(0)
	switch r {
	case RefcountSparse:
		span = ramBytes
	case RefcountMaxPFN:
		span = max(maxPFNAddr, ramBytes)
	default:
		return 0
	}
	n := (span + refcountSpan - 1) / refcountSpan * refcountBytes
	return (n + pageBytes - 1) / pageBytes * pageBytes
}
