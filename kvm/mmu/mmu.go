// Package mmu models KVM's TDP MMU (arch/x86/kvm/mmu/tdp_mmu.c, v6.19):
// per VM a direct root for shared GPAs and, for a TD, a mirror root for
// private GPAs whose every change is carried into the TDX module's Secure
// EPT through the external hooks (External). Page tables are 512-entry
// nodes of SPTEs at 4K, 2M, 1G and 512G, like the real ones.
//
// Faults run under mmu_lock for read and change SPTEs with compare-and-
// exchange; a mirror entry is frozen (FROZEN_SPTE) while the S-EPT is being
// changed, so a concurrent fault sees it busy and retries. Zaps run under
// mmu_lock for write. Every page-table page comes from a per-vCPU cache
// topped up before mmu_lock is taken.
//
// Which zap touches private memory: an attribute change to
// shared, a guest_memfd punch hole or release, and memslot deletion zap
// private leaves; MMU-notifier invalidations and memory-type changes never
// do; the mirror root is never invalidated or replaced while the VM lives.
package mmu

import (
	"errors"
	"sync/atomic"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/internal/mutation"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/sched"
)

// RootLevel is the level of a 4-level EPT root (PML4; TDX level 3).
const RootLevel addr.Level = 3

// External is the external page table KVM mirrors: the TDX module's Secure
// EPT, reached through kvm/tdx (struct kvm_x86_ops: set_external_spte,
// link_external_spt, remove_external_spte, free_external_spt,
// split_external_spte, topup_external_cache). Errors are errnos: EBUSY asks
// the fault to retry; any other error means the hook already did
// KVM_BUG_ON and the VM is dead.
type External interface {
	// TopUpExternalCache fills the arch's per-vCPU caches (Dynamic PAMT
	// pages) before mmu_lock is taken.
	TopUpExternalCache(t *sched.Thread, v *VCPU) error
	// SetExternalSPTE maps a private leaf (TDH.MEM.PAGE.AUG, or
	// TDH.MEM.PAGE.ADD while the TD is built). Called with the entry
	// frozen and mmu_lock held for read.
	SetExternalSPTE(t *sched.Thread, v *VCPU, gfn addr.GFN, level addr.Level, pfn addr.PFN) error
	// LinkExternalSPT adds the S-EPT page spt below the entry at level
	// (TDH.MEM.SEPT.ADD). Frozen entry, mmu_lock for read.
	LinkExternalSPT(t *sched.Thread, v *VCPU, gfn addr.GFN, level addr.Level, spt addr.PFN) error
	// RemoveExternalSPTE removes a private leaf (BLOCK, TRACK, kick,
	// REMOVE, WBINVD, reset). mmu_lock held for write.
	RemoveExternalSPTE(t *sched.Thread, gfn addr.GFN, level addr.Level, pfn addr.PFN) error
	// FreeExternalSPT reclaims an S-EPT page at teardown (HKID already
	// released). On error the MMU leaks the page, as the kernel does.
	FreeExternalSPT(t *sched.Thread, gfn addr.GFN, level addr.Level, spt addr.PFN) error
	// SplitExternalSPTE demotes the huge private leaf mapping pfn into the
	// S-EPT page spt (TDH.MEM.PAGE.DEMOTE). mmu_lock held for write. It returns
	// kvm.ErrSplitCacheLow, having changed nothing, when its split cache
	// cannot cover the split.
	SplitExternalSPTE(t *sched.Thread, gfn addr.GFN, level addr.Level, pfn, spt addr.PFN) error
	// TopUpSplitCache fills the arch's per-VM split cache for splits
	// splits before mmu_lock is taken (topup_external_per_vm_split_cache).
	TopUpSplitCache(t *sched.Thread, splits int) error
	// PrivateMaxLevel is the largest level the arch can map private
	// memory at now (private_max_mapping_level).
	PrivateMaxLevel() addr.Level
}

// Config holds the MMU's policy knobs (docs/policies.md).
type Config struct {
	// ZapPrivateOnNotifier makes memory-type changes (kvm_zap_gfn_range)
	// zap private leaves too, as the early RFCs did before mainline kept
	// the mirror root out of it. Default false (upstream).
	ZapPrivateOnNotifier bool
	// HugePages caps the level of private mappings (default 2M).
	HugePages HugePages
	// MaxOrderFrom says where the max mapping order comes from (default
	// guest_memfd).
	MaxOrderFrom MaxOrderFrom
}

// page is a struct kvm_mmu_page: one 512-entry page table.
type page struct {
	// spt is its own 4 KiB allocation: inside the struct it would round
	// the object up to Go's 4864-byte size class (1.5 B more per 4K page).
	spt      *[512]atomic.Uint64
	children *[512]atomic.Pointer[page] // nil for 4K page tables
	level    addr.Level                 // level of the entries in spt
	gfn      addr.GFN                   // first GFN the table maps (direct root: with the shared bit)
	pfn      addr.PFN                   // the host page holding spt
	external addr.PFN                   // sp->external_spt (mirror, below the root)
	root     Root
	hasExt   bool
}

func (p *page) load(i int) SPTE { return SPTE(p.spt[i].Load()) }

func (p *page) cas(i int, old, new SPTE) bool {
	return p.spt[i].CompareAndSwap(uint64(old), uint64(new))
}

func (p *page) store(i int, v SPTE) { p.spt[i].Store(uint64(v)) }

func (p *page) child(i int) *page {
	if p.children == nil {
		return nil
	}
	return p.children[i].Load()
}

// entryGFN is the first GFN the entry i maps.
func (p *page) entryGFN(i int) addr.GFN {
	return p.gfn + addr.GFN(uint64(i)<<(9*uint(p.level)))
}

// Stats are the MMU's counters, safe to read at any time.
type Stats struct {
	// Mapped[root][level]: present leaves now, indexed by Root
	// (DirectRoot, MirrorRoot).
	Mapped [2][3]int64
	// PeakMapped is the largest Mapped seen for each level.
	PeakMapped [2][3]int64
	// PageTables counts page-table pages now, per root.
	PageTables [2]int64
	// Faults, Fixed, Spurious, Retries count fault outcomes.
	Faults, Fixed, Spurious, Retries int64
	// Zapped counts leaves zapped; TLBFlushes remote flushes.
	Zapped, TLBFlushes int64
	// LeakedExternal counts S-EPT pages leaked after a failed reclaim.
	LeakedExternal int64
	// Splits[level] counts huge leaves split at level (2M, 1G).
	Splits [3]int64
}

type counters struct {
	mapped    [2][3]atomic.Int64
	peak      [2][3]atomic.Int64
	tables    [2]atomic.Int64
	faults    atomic.Int64
	fixed     atomic.Int64
	spurious  atomic.Int64
	retries   atomic.Int64
	zapped    atomic.Int64
	flushes   atomic.Int64
	leakedExt atomic.Int64
	splits    [3]atomic.Int64
}

// MMU is one VM's TDP MMU.
type MMU struct {
	vm   *kvm.VM
	mem  *hostmem.Memory
	lock *sched.RWLock
	cfg  Config
	ext  External // nil: no mirrored TDP
	sink event.Sink
	// roots are read without mmu_lock (a vCPU's Load checks them before
	// taking it; views read them at any time), so they are atomic, as the
	// kernel reads root lists under RCU.
	roots  [rootCount]atomic.Pointer[page]
	vcpus  []*VCPU
	spSrc  hostmem.Source
	extSrc hostmem.Source
	// splitPT and splitExt are the per-VM split cache: KVM's page-table
	// pages and the S-EPT pages a split of a mirror leaf needs, topped up
	// before mmu_lock and drawn from under it for write.
	splitPT, splitExt *Cache
	c                 counters
	destroyed         bool
}

// New attaches a TDP MMU to vm (kvm_mmu_init_vm). ext is the external page
// table for a TD (kvm_has_mirrored_tdp), nil for other VMs.
func New(vm *kvm.VM, cfg Config, ext External) (*MMU, error) {
	mem := vm.Memory()
	sp, err := mem.RegisterSource(spCacheName)
	if err != nil {
		return nil, err
	}
	es, err := mem.RegisterSource(extCacheName)
	if err != nil {
		return nil, err
	}
	m := &MMU{vm: vm, mem: mem, lock: vm.MMULock(), cfg: cfg, ext: ext, sink: vm.Sink(), spSrc: sp, extSrc: es}
	if ext != nil {
		acct := vm.Account()
		if m.splitPT, err = NewCache(mem, spCacheName, acct, 0, splitsPerRange); err != nil {
			return nil, err
		}
		if m.splitExt, err = NewCache(mem, extCacheName, acct, 0, splitsPerRange); err != nil {
			return nil, err
		}
	}
	vm.SetMMU(m)
	return m, nil
}

const (
	spCacheName  = "kvm.mmu_shadow_page_cache"
	extCacheName = "kvm.mmu_external_spt_cache"
)

// Mirrored reports whether the VM has a mirror root (kvm_has_mirrored_tdp).
func (m *MMU) Mirrored() bool { return m.ext != nil }

// Stats returns the counters.
func (m *MMU) Stats() Stats {
	var s Stats
	for r := range 2 {
		for l := range 3 {
			s.Mapped[r][l] = m.c.mapped[r][l].Load()
			s.PeakMapped[r][l] = m.c.peak[r][l].Load()
		}
		s.PageTables[r] = m.c.tables[r].Load()
	}
	s.Faults, s.Fixed, s.Spurious, s.Retries = m.c.faults.Load(), m.c.fixed.Load(), m.c.spurious.Load(), m.c.retries.Load()
	s.Zapped, s.TLBFlushes, s.LeakedExternal = m.c.zapped.Load(), m.c.flushes.Load(), m.c.leakedExt.Load()
	for l := range s.Splits {
		s.Splits[l] = m.c.splits[l].Load()
	}
	return s
}

func (m *MMU) countMap(r Root, level addr.Level, d int64) {
	if level > addr.Level1G {
		return
	}
	n := m.c.mapped[r][level].Add(d)
	for {
		p := m.c.peak[r][level].Load()
		if n <= p || m.c.peak[r][level].CompareAndSwap(p, n) {
			break
		}
	}
}

func (m *MMU) emit(t *sched.Thread, name string, gfn addr.GFN, level addr.Level, pfn addr.PFN, r Root, detail string) {
	if m.sink == event.Discard {
		return // nobody listens: skip building and stamping the event
	}
	ev := event.Event{Kind: event.KindMMU, Name: name, Detail: detail,
		Args: [4]uint64{uint64(gfn), uint64(level), uint64(pfn), uint64(r)}}
	t.Stamp(&ev)
	m.sink.Emit(ev)
}

// VCPU is a vCPU's MMU: its memory caches and its view of the roots
// (struct kvm_mmu plus the caches in struct kvm_vcpu_arch).
type VCPU struct {
	m  *MMU
	kv *kvm.VCPU
	// PageCache is mmu_shadow_page_cache: KVM's own page-table pages.
	PageCache *Cache
	// ExternalSPTCache is mmu_external_spt_cache: the S-EPT pages handed
	// to the TDX module by LinkExternalSPT (mirrored VMs only).
	ExternalSPTCache *Cache
	// Arch is the arch code's per-vCPU state (kvm/tdx's vCPU), for the
	// hooks.
	Arch any
	// couldMap is the level the last private fault could have been
	// mapped at without the guest's accept level (CouldMap).
	couldMap addr.Level
}

// NewVCPU creates the MMU side of vCPU kv (kvm_mmu_create).
func (m *MMU) NewVCPU(kv *kvm.VCPU) (*VCPU, error) {
	acct := m.vm.Account()
	// Capacities: PT64_ROOT_MAX_LEVEL (5) as the minimum per fault, topped
	// up to KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE (40).
	pc, err := NewVCPUCache(m.mem, spCacheName, acct, 5, 40)
	if err != nil {
		return nil, err
	}
	pc.Uncharged = mutation.On(mutation.UnchargedPageTables)
	v := &VCPU{m: m, kv: kv, PageCache: pc}
	if m.Mirrored() {
		if v.ExternalSPTCache, err = NewVCPUCache(m.mem, extCacheName, acct, 5, 40); err != nil {
			return nil, err
		}
	}
	m.vcpus = append(m.vcpus, v)
	return v, nil
}

// TopUp is mmu_topup_memory_caches(): every cache a fault may draw from,
// filled before mmu_lock is taken. Errors: ENOMEM.
func (v *VCPU) TopUp(t *sched.Thread) error {
	if err := v.PageCache.TopUp(t); err != nil {
		return err
	}
	if v.m.Mirrored() {
		if err := v.ExternalSPTCache.TopUp(t); err != nil {
			return err
		}
		if err := v.m.ext.TopUpExternalCache(t, v); err != nil {
			return err
		}
	}
	return nil
}

// Load allocates the VM's roots if they do not exist yet
// (kvm_mmu_load -> mmu_alloc_direct_roots, under mmu_lock for write): the
// mirror root for a TD, and the direct root. The caches must be topped up.
func (v *VCPU) Load(t *sched.Thread) error {
	m := v.m
	if m.loaded() {
		return nil
	}
	if err := v.TopUp(t); err != nil {
		return err
	}
	m.lock.Lock(t)
	defer m.lock.Unlock(t)
	if m.destroyed {
		return errno.New("kvm_mmu_load", errno.EIO, "the VM's MMU was destroyed")
	}
	for _, r := range m.rootTypes() {
		if m.root(r) != nil {
			continue
		}
		p, err := m.allocPage(t, v, r, RootLevel, 0)
		if err != nil {
			return err
		}
		m.roots[r].Store(p)
	}
	return nil
}

// loaded reports whether every root the VM has exists.
func (m *MMU) loaded() bool {
	for _, r := range m.rootTypes() {
		if m.root(r) == nil {
			return false
		}
	}
	return true
}

// rootTypes are the roots the VM has, in the order kvm_mmu_load allocates
// them: the mirror root first for a TD, then the direct root.
func (m *MMU) rootTypes() []Root {
	if m.Mirrored() {
		return []Root{MirrorRoot, DirectRoot}
	}
	return []Root{DirectRoot}
}

// allocPage is tdp_mmu_alloc_sp() (+ kvm_mmu_alloc_external_spt for a
// mirror table below the root, the S-EPT page TDH.MEM.SEPT.ADD will add):
// pages from the vCPU's caches, no sleeping.
func (m *MMU) allocPage(t *sched.Thread, v *VCPU, r Root, level addr.Level, gfn addr.GFN) (*page, error) {
	pfn, err := v.PageCache.Take(t)
	if err != nil {
		return nil, err
	}
	p := newPage(r, level, gfn, pfn)
	if r == MirrorRoot && level < RootLevel {
		ext, err := v.ExternalSPTCache.Take(t)
		if err != nil {
			_ = m.mem.Free(t, pfn, m.spSrc)
			return nil, err
		}
		p.external, p.hasExt = ext, true
	}
	m.c.tables[r].Add(1)
	return p, nil
}

// newPage is a page table in root r whose entries are at level, held in
// the host page pfn, with no entries yet.
func newPage(r Root, level addr.Level, gfn addr.GFN, pfn addr.PFN) *page {
	p := &page{spt: new([512]atomic.Uint64), level: level, gfn: gfn, pfn: pfn, root: r}
	if level > addr.Level4K {
		p.children = new([512]atomic.Pointer[page])
	}
	return p
}

// freePage is tdp_mmu_free_sp(): both pages go back to the host.
func (m *MMU) freePage(t *sched.Thread, p *page) {
	if p.hasExt {
		_ = m.mem.Free(t, p.external, m.extSrc)
		p.hasExt = false
	}
	src := m.spSrc
	if mutation.On(mutation.FreePTToWrongCache) {
		src = m.extSrc
	}
	_ = m.mem.Free(t, p.pfn, src)
	m.c.tables[p.root].Add(-1)
}

// Leaf is a present leaf SPTE, for read-only views.
type Leaf struct {
	GFN   addr.GFN // first GFN mapped (direct root: with the shared bit)
	Level addr.Level
	PFN   addr.PFN
}

// Lookup returns the leaf mapping gfn in root r. For the direct root of a
// TD, gfn carries the shared bit.
func (m *MMU) Lookup(r Root, gfn addr.GFN) (Leaf, bool) {
	for e := range leaves(m.root(r), gfn, gfn+1) {
		return e.leaf(), true
	}
	return Leaf{}, false
}

// Leaves calls fn for every present leaf of root r, in GFN order, until fn
// returns false.
func (m *MMU) Leaves(r Root, fn func(Leaf) bool) {
	for e := range leaves(m.root(r), 0, allGFNs) {
		if !fn(e.leaf()) {
			return
		}
	}
}

// Table is a page-table page, for read-only views.
type Table struct {
	GFN      addr.GFN
	Level    addr.Level // level of its entries
	PFN      addr.PFN   // KVM's page
	External addr.PFN   // the S-EPT page (mirror tables below the root)
	HasExt   bool
}

// Tables calls fn for every page-table page of root r, parents first.
func (m *MMU) Tables(r Root, fn func(Table)) {
	p := m.root(r)
	if p == nil {
		return
	}
	fn(p.table())
	for e := range walk(p, 0, allGFNs) {
		if !e.old.Leaf(e.p.level) {
			if c := e.p.child(e.i); c != nil {
				fn(c.table())
			}
		}
	}
}

func (p *page) table() Table {
	return Table{GFN: p.gfn, Level: p.level, PFN: p.pfn, External: p.external, HasExt: p.hasExt}
}

// root returns root r's top page table, nil before Load or after Destroy.
func (m *MMU) root(r Root) *page { return m.roots[r].Load() }

// isBusy reports a hook's "try again" (-EBUSY).
func isBusy(err error) bool { return errors.Is(err, errno.EBUSY) }

// rootGFN maps a memslot GFN into the root that holds it: the direct root
// of a TD maps shared GPAs with the shared bit set (kvm_gfn_root_bits).
func (m *MMU) rootGFN(r Root, gfn addr.GFN) addr.GFN {
	if r == MirrorRoot {
		return gfn
	}
	return gfn | m.vm.SharedBit()
}

var _ kvm.MMU = (*MMU)(nil)
