// Package hostmem models host physical memory: page frames, a buddy
// allocator over orders 0..18 (4 KiB to 1 GiB) with coalescing, hugetlb-style
// pools of 2 MiB and 1 GiB pages reserved at start, folios with refcounts and
// splitting, per-VM (memcg-style) accounting, page provenance and a 64-bit
// content tag per page.
//
// Kernel counterparts: mm/page_alloc.c (buddy), mm/hugetlb.c (pools), struct
// folio (refcount, order), memcg charging (__GFP_ACCOUNT).
//
// Nothing is allocated per page until a page is used below 2 MiB: 1 GiB
// sections are created on first use, 2 MiB chunks carry one record, and only
// chunks used at 4 KiB keep a 512-entry page array (8 bytes a page, and 8
// more for content tags only once a page of the chunk holds other than zeros).
package hostmem

import (
	"errors"
	"fmt"
	"sync"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
)

// Source is where a page came from and must go back to: the buddy
// allocator, a hugetlb pool, or a named cache backed by the buddy allocator
// (KVM's MMU page cache, a TDX page cache, ...). Freeing into another source
// is refused.
type Source uint8

// Built-in sources.
const (
	SourceBuddy  Source = 1
	SourceHuge2M Source = 2
	SourceHuge1G Source = 3
)

// Account is a memcg-style charge target (one per VM); AccountHost (0) is the
// kernel itself.
type Account uint16

// AccountHost is the host kernel's own account.
const AccountHost Account = 0

// Tag is a page's content: who wrote it and which version. Zero means a
// zeroed page. Contents themselves are not stored.
type Tag uint64

// MakeTag builds a tag from an owner (e.g. a TD's id) and a version.
func MakeTag(owner uint16, version uint64) Tag {
	return Tag(uint64(owner)<<48 | version&(1<<48-1))
}

// Owner returns the owner part of a tag.
func (t Tag) Owner() uint16 { return uint16(t >> 48) }

// Version returns the version part of a tag.
func (t Tag) Version() uint64 { return uint64(t) & (1<<48 - 1) }

// Guard lets a higher layer veto freeing a page it still uses. The TDX
// module installs one: a page that PAMT assigns to a TD must not go back to
// the host.
type Guard interface {
	CheckFree(pfn addr.PFN, order addr.Order) error
}

// SplitGuard is a Guard that also watches folio splits: the TDX module
// reports a folio split to a smaller order while a Secure EPT still maps
// part of it at a larger one (split_order=folio_first, rejected in the TDX huge-page series v3). The
// split happens anyway, as in the kernel; the report is the violation
// RuleSplitMappedHuge.
type SplitGuard interface {
	CheckSplit(pfn addr.PFN, order, newOrder addr.Order) error
}

// Config sizes host memory.
type Config struct {
	Bytes  uint64 // total memory; a multiple of 4 KiB, at most 64 TiB
	Huge2M int    // 2 MiB pages reserved for the hugetlb pool at start
	Huge1G int    // 1 GiB pages reserved for the hugetlb pool at start
}

// DefaultBytes is the default host memory size, 64 GiB.
const DefaultBytes = 64 << 30

// MaxBytes is the largest host memory modelled.
const MaxBytes = 64 << 40

// Request describes an allocation.
type Request struct {
	Order   addr.Order // 0..18
	Source  Source     // SourceBuddy, a pool, or a registered cache source
	Account Account    // who the allocation is for
	Charged bool       // charged to Account (__GFP_ACCOUNT)
	Atomic  bool       // GFP_ATOMIC / from a pre-filled cache: may not sleep
	// GetRef hands the folio out with a second reference, the caller's
	// own (refcount 2: folio_get() right after the allocation, in the
	// same lock round), for a page cache that keeps the first.
	GetRef bool
}

// Usage is what an account holds, in 4 KiB pages.
type Usage struct {
	Charged   uint64
	Uncharged uint64
}

// Memory is host physical memory.
type Memory struct {
	mu    sync.Mutex
	sink  event.Sink
	guard Guard
	// failAlloc is fault injection (SetAllocFailer); nil for none.
	failAlloc func(source string, order addr.Order) error

	npages       addr.PFN
	sections     []*section
	sectionsLive int
	expanded     int
	spareArrays  []*[chunkPages]pageMeta
	bytes        map[addr.PFN]*[addr.PageSize]byte

	free  [maxOrder + 1][]addr.PFN // free-block stacks; stale entries skipped
	nfree [maxOrder + 1]uint64

	pool2M, pool1G []addr.PFN
	sources        []string
	accounts       []string
	usage          []Usage
	freePages      uint64
	violations     uint64
}

// New creates host memory. sink may be nil.
func New(cfg Config, sink event.Sink) (*Memory, error) {
	if cfg.Bytes == 0 {
		cfg.Bytes = DefaultBytes
	}
	if cfg.Bytes%addr.PageSize != 0 {
		return nil, fmt.Errorf("hostmem: size %d is not a multiple of 4 KiB", cfg.Bytes)
	}
	if cfg.Bytes > MaxBytes {
		return nil, fmt.Errorf("hostmem: size %d exceeds the modelled maximum of 64 TiB", cfg.Bytes)
	}
	if cfg.Huge2M < 0 || cfg.Huge1G < 0 {
		return nil, fmt.Errorf("hostmem: negative huge page pool size")
	}
	if sink == nil {
		sink = event.Discard
	}
	m := &Memory{
		sink:     sink,
		npages:   addr.PFN(cfg.Bytes / addr.PageSize),
		sources:  []string{"none", "buddy", "hugetlb-2M", "hugetlb-1G"},
		accounts: []string{"host"},
		usage:    []Usage{{}},
	}
	m.sections = make([]*section, (m.npages+(1<<sectionOrder)-1)>>sectionOrder)
	// Seed the free lists with the largest aligned blocks, highest address
	// first so that allocation starts at the bottom of memory.
	var blocks []struct {
		pfn   addr.PFN
		order addr.Order
	}
	for pfn := addr.PFN(0); pfn < m.npages; {
		o := addr.Order(maxOrder)
		for o > 0 && (pfn&(addr.PFN(1)<<o-1) != 0 || pfn+addr.PFN(1)<<o > m.npages) {
			o--
		}
		blocks = append(blocks, struct {
			pfn   addr.PFN
			order addr.Order
		}{pfn, o})
		pfn += addr.PFN(1) << o
	}
	for i := len(blocks) - 1; i >= 0; i-- {
		b := blocks[i]
		if b.order < sectionOrder {
			m.materialize(b.pfn)
			m.setBlock(b.pfn, b.order, pageMeta{})
			m.setHead(b.pfn, func(p *pageMeta) { p.of = packOf(b.order, stFreeHead, false) })
		}
		m.pushFree(b.pfn, b.order)
		m.freePages += 1 << b.order
	}
	for i := 0; i < cfg.Huge1G; i++ {
		if err := m.reserve(sectionOrder, SourceHuge1G); err != nil {
			return nil, fmt.Errorf("hostmem: reserving 1 GiB page %d of %d: %w", i+1, cfg.Huge1G, err)
		}
	}
	for i := 0; i < cfg.Huge2M; i++ {
		if err := m.reserve(chunkOrder, SourceHuge2M); err != nil {
			return nil, fmt.Errorf("hostmem: reserving 2 MiB page %d of %d: %w", i+1, cfg.Huge2M, err)
		}
	}
	return m, nil
}

// SetAllocFailer installs fault injection on allocations: fail is asked,
// under the allocator's lock, about every allocation (the source's name
// and the order) and, when it returns an error, the allocation fails with
// ErrNoMemory caused by that error. nil removes it.
func (m *Memory) SetAllocFailer(fail func(source string, order addr.Order) error) {
	m.mu.Lock()
	m.failAlloc = fail
	m.mu.Unlock()
}

// SetGuard installs the veto on frees (the TDX module's PAMT check).
func (m *Memory) SetGuard(g Guard) {
	m.mu.Lock()
	m.guard = g
	m.mu.Unlock()
}

// RegisterSource names a cache backed by the buddy allocator, so pages taken
// through it remember where they came from.
func (m *Memory) RegisterSource(name string) (Source, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, n := range m.sources {
		if n == name {
			return Source(i), nil
		}
	}
	if len(m.sources) >= 255 {
		return 0, errors.New("hostmem: too many page sources")
	}
	m.sources = append(m.sources, name)
	return Source(len(m.sources) - 1), nil
}

// SourceName returns the name of a source.
func (m *Memory) SourceName(s Source) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sourceName(s)
}

func (m *Memory) sourceName(s Source) string {
	if int(s) < len(m.sources) {
		return m.sources[s]
	}
	return fmt.Sprintf("source(%d)", s)
}

// NewAccount creates an account (a VM's memcg).
func (m *Memory) NewAccount(name string) (Account, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.accounts) >= 1<<16-1 {
		return 0, errors.New("hostmem: too many accounts")
	}
	m.accounts = append(m.accounts, name)
	m.usage = append(m.usage, Usage{})
	return Account(len(m.accounts) - 1), nil
}

// Usage returns what an account holds.
func (m *Memory) Usage(a Account) Usage {
	m.mu.Lock()
	defer m.mu.Unlock()
	if int(a) >= len(m.usage) {
		return Usage{}
	}
	return m.usage[a]
}

// AccountName returns an account's name.
func (m *Memory) AccountName(a Account) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if int(a) >= len(m.accounts) {
		return fmt.Sprintf("account(%d)", a)
	}
	return m.accounts[a]
}

// Pages returns the number of 4 KiB frames.
func (m *Memory) Pages() uint64 { return uint64(m.npages) }

// FreePages returns the number of frames free in the buddy allocator (pool
// pages are not free: they are reserved).
func (m *Memory) FreePages() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.freePages
}

// PoolFree returns the number of unused pages in the 2 MiB and 1 GiB pools.
func (m *Memory) PoolFree() (huge2M, huge1G int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pool2M), len(m.pool1G)
}

// Violations returns how many rule violations (double free, wrong pool, ...)
// were refused.
func (m *Memory) Violations() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.violations
}

// StateBytes estimates the Go memory the model spends describing host
// memory: sections, chunk page arrays and free-list stacks.
func (m *Memory) StateBytes() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := uint64(len(m.sections))*8 + uint64(m.sectionsLive)*uint64(len(section{}.chunks))*32 +
		uint64(m.expanded)*chunkPages*8
	for _, f := range m.free {
		b += uint64(cap(f)) * 8
	}
	return b
}

func (m *Memory) pushFree(pfn addr.PFN, order addr.Order) {
	m.free[order] = append(m.free[order], pfn)
	m.nfree[order]++
	if len(m.free[order]) > 64 && uint64(len(m.free[order])) > 4*m.nfree[order] {
		m.compactFreeList(order)
	}
}

// compactFreeList drops stale and duplicate entries, keeping stack order.
func (m *Memory) compactFreeList(order addr.Order) {
	list := m.free[order]
	out := list[:0]
	seen := make(map[addr.PFN]bool, m.nfree[order])
	for _, p := range list {
		mp := m.meta(p)
		if mp.state() == stFreeHead && mp.order() == order && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	m.free[order] = out
}

// popFree takes a free block of exactly this order, if any.
func (m *Memory) popFree(order addr.Order) (addr.PFN, bool) {
	list := m.free[order]
	for len(list) > 0 {
		p := list[len(list)-1]
		list = list[:len(list)-1]
		mp := m.meta(p)
		if mp.state() == stFreeHead && mp.order() == order {
			m.free[order] = list
			m.nfree[order]--
			return p, true
		}
	}
	m.free[order] = list
	return 0, false
}

// takeBlock removes a block of the given order from the buddy allocator,
// splitting a larger one if needed. The block's pages are left stNone.
func (m *Memory) takeBlock(order addr.Order) (addr.PFN, error) {
	for k := order; k <= maxOrder; k++ {
		pfn, ok := m.popFree(k)
		if !ok {
			continue
		}
		m.materialize(pfn)
		m.setHead(pfn, func(p *pageMeta) { p.of = 0 })
		for j := k; j > order; j-- {
			buddy := pfn + addr.PFN(1)<<(j-1)
			m.setHead(buddy, func(p *pageMeta) { *p = pageMeta{of: packOf(j-1, stFreeHead, false)} })
			m.pushFree(buddy, j-1)
		}
		m.freePages -= 1 << order
		return pfn, nil
	}
	return 0, ErrNoMemory
}

// giveBlock returns a block to the buddy allocator and coalesces it.
func (m *Memory) giveBlock(pfn addr.PFN, order addr.Order) {
	m.setBlock(pfn, order, pageMeta{})
	m.freePages += 1 << order
	orig := pfn
	for order < maxOrder {
		buddy := pfn ^ addr.PFN(1)<<order
		if buddy+addr.PFN(1)<<order > m.npages {
			break
		}
		bm := m.meta(buddy)
		if bm.state() != stFreeHead || bm.order() != order {
			break
		}
		m.setHead(buddy, func(p *pageMeta) { p.of = 0 })
		m.nfree[order]-- // its stack entry is now stale
		pfn = min(pfn, buddy)
		order++
	}
	// Interior pages of merged buddies are already zero; only the new head
	// is written, and its chunk folds back to one record when whole.
	m.setHead(pfn, func(p *pageMeta) { *p = pageMeta{of: packOf(order, stFreeHead, false)} })
	m.maybeCollapse(m.chunkOf(pfn))
	m.maybeCollapse(m.chunkOf(orig))
	m.pushFree(pfn, order)
}

func (m *Memory) reserve(order addr.Order, src Source) error {
	pfn, err := m.takeBlock(order)
	if err != nil {
		return err
	}
	m.setBlock(pfn, order, pageMeta{of: packOf(order, stPooled, false), src: src})
	if src == SourceHuge1G {
		m.pool1G = append(m.pool1G, pfn)
	} else {
		m.pool2M = append(m.pool2M, pfn)
	}
	return nil
}
