// Package tdxmodule models the Intel TDX module's memory-management ABI:
// TD control structures, the Secure EPT, PAMT (static and Dynamic), TLB
// tracking epochs, TD measurement (MRTD), and the guest's
// TDG.MEM.PAGE.ACCEPT. Every host call goes through SEAMCALL with the real
// leaf number, register operands and status codes (TDX module 1.5.01
// semantics; Dynamic PAMT from the 2.0 line), as read from the module source
// (intel/tdx-module, tag TDX_1.5.01) and the TDX module ABI specification. The host's typed wrappers,
// the kernel's tdh_*() functions, are package tdxcall; this package holds
// only the leaves' handlers and the read-only views checks use.
//
// Like the real module, no call ever waits: a lock held by a concurrent call
// makes the second one return TDX_OPERAND_BUSY with the operand id of what
// was busy. Each call takes its locks, yields to the scheduler (the SEAMCALL
// boundary, where another simulated CPU may run), then releases them, so
// contention is visible under the deterministic scheduler.
package tdxmodule

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
)

// PAMT page types (pamt_manager.h).
const (
	PTNDA   uint8 = 0
	PTRSVD  uint8 = 1
	PTREG   uint8 = 3
	PTTDR   uint8 = 4
	PTTDCX  uint8 = 5
	PTTDVPR uint8 = 6
	PTEPT   uint8 = 8
	PTPAMT  uint8 = 15 // 2.0: a 2M node that owns a dynamic 4K PAMT page pair
)

// PTName names a PAMT page type.
func PTName(pt uint8) string {
	switch pt {
	case PTNDA:
		return "PT_NDA"
	case PTRSVD:
		return "PT_RSVD"
	case PTREG:
		return "PT_REG"
	case PTTDR:
		return "PT_TDR"
	case PTTDCX:
		return "PT_TDCX"
	case PTTDVPR:
		return "PT_TDVPR"
	case PTEPT:
		return "PT_EPT"
	case PTPAMT:
		return "PT_PAMT"
	}
	return fmt.Sprintf("PT(%d)", pt)
}

// Config selects module options.
type Config struct {
	DynamicPAMT bool // TDX_FEATURES0 bit 36, enabled at TDH.SYS.CONFIG
	Allow1GAug  bool // accept TDH.MEM.PAGE.AUG at 1G (not in 1.5: AUG is 4K..2M)
	HKIDs       int  // private KeyIDs available to TDs (default 63)
	Packages    int  // CPU packages: KEY.CONFIG and CACHE.WB run once on each (default 1)
	TDCSPages   int  // TDCX pages a TD needs (default 6: MIN_NUM_TDCS_PAGES)
	TDVPSPages  int  // TDVPR + TDVPX pages a vCPU needs (default 6)
	// NoEnhancedDemote models a module without TDX_FEATURES0
	// ENHANCED_DEMOTE_INTERRUPTIBILITY (bit 51; first enumerated by
	// TDX_1.5.28): TDH.MEM.PAGE.DEMOTE of a non-partitioned TD returns
	// TDX_INTERRUPTED_RESTARTABLE when a host interrupt is pending (seen on
	// 1.5.16 and 1.5.24 by Sagi Shahar, "[PATCH v3 24/24] KVM: TDX: Turn on
	// PG_LEVEL_2M" thread, 20260106101646.24809-1-yan.y.zhao@intel.com).
	// The zero value is today's model: the feature is reported.
	NoEnhancedDemote bool
}

// Features0 bits the model reports (TDX_FEATURES0 metadata field).
const (
	Features0DynamicPAMT                    = 1 << 36
	Features0EnhancedDemoteInterruptibility = 1 << 51
)

// Features0 is the module's TDX_FEATURES0 as KVM reads it at boot
// (Kernel: tdx_get_sysinfo(); the huge-page v3 series' patch 2 tests bit 51).
func (c Config) Features0() uint64 {
	var f uint64
	if c.DynamicPAMT {
		f |= Features0DynamicPAMT
	}
	if !c.NoEnhancedDemote {
		f |= Features0EnhancedDemoteInterruptibility
	}
	return f
}

func (c *Config) defaults() {
	if c.HKIDs == 0 {
		c.HKIDs = 63
	}
	if c.Packages == 0 {
		c.Packages = 1
	}
	if c.TDCSPages == 0 {
		c.TDCSPages = 6
	}
	if c.TDVPSPages == 0 {
		c.TDVPSPages = 6
	}
}

// Address-format constants. HPAs carry the KeyID in bits 51:46 (MAX_PA 46
// is the model's choice: 64 TiB of host memory).
const (
	maxPABits   = 46
	hkidShift   = maxPABits
	firstHKID   = 1 // KeyID 0 is the host's shared key
	sharedBit48 = 47
	sharedBit52 = 51
)

// KeyIDShift is where an HPA operand carries a KeyID (bits 51:46), as
// TDH.PHYMEM.PAGE.WBINVD takes the TD's HKID.
const KeyIDShift = hkidShift

// Module is one TDX module instance on one host.
type Module struct {
	mu   sync.Mutex
	cfg  Config
	mem  *hostmem.Memory
	sink event.Sink

	pamt        []*pamt1G
	tdmrPages   addr.PFN // TDMR coverage: host memory rounded up to 1 GiB
	memPages    addr.PFN
	pamtSource  hostmem.Source
	pamtBacking []addr.PFN
	staticBytes uint64
	pairs       uint64 // Dynamic PAMT page pairs installed

	// hostIRQ is a host interrupt pending on the next interruptible
	// SEAMCALL (is_interrupt_pending_host_side()); see PendHostInterrupt.
	hostIRQ bool

	kot    []*TD // by HKID; nil = free
	tds    map[addr.PFN]*TD
	byID   []*TD // by owner id (PAMT owner); index 0 unused
	vcpus  map[addr.PFN]*VCPU
	nextID uint16

	// inject is the fault injector (nil: none), read on every SEAMCALL
	// without the module's lock.
	inject atomic.Pointer[Injector]
	// cov records S-EPT transitions (nil: off); see RecordTransitions.
	cov *coverage
}

// Injector is fault injection: it sees every host SEAMCALL before it runs
// and may make it fail with a status of its choosing instead (for example
// TDX_OPERAND_BUSY on AUG, or an error on REMOVE), changing nothing in the
// module. ok=false lets the call run normally.
type Injector func(leaf Leaf, in Regs) (st Status, ok bool)

// SetInjector installs (or, with nil, removes) fault injection.
func (m *Module) SetInjector(f Injector) {
	if f == nil {
		m.inject.Store(nil)
		return
	}
	m.inject.Store(&f)
}

// New creates a TDX module over host memory: it initialises PAMT for every
// TDMR (TDH.SYS.TDMR.INIT) and reserves the PAMT's own memory from the host,
// as the kernel does at TDX module initialisation (tdx_enable()).
func New(mem *hostmem.Memory, cfg Config, sink event.Sink) (*Module, error) {
	cfg.defaults()
	if cfg.HKIDs < 1 || cfg.HKIDs > 1<<(52-maxPABits)-1 {
		return nil, fmt.Errorf("tdxmodule: %d HKIDs do not fit the %d KeyID bits", cfg.HKIDs, 52-maxPABits)
	}
	if cfg.Packages < 1 || cfg.Packages > 64 {
		return nil, fmt.Errorf("tdxmodule: packages %d not in 1..64", cfg.Packages)
	}
	if sink == nil {
		sink = event.Discard
	}
	m := &Module{
		cfg: cfg, mem: mem, sink: sink,
		memPages: addr.PFN(mem.Pages()),
		kot:      make([]*TD, cfg.HKIDs+firstHKID),
		tds:      map[addr.PFN]*TD{},
		byID:     []*TD{nil},
		vcpus:    map[addr.PFN]*VCPU{},
	}
	m.tdmrPages = (m.memPages + 1<<18 - 1) &^ (1<<18 - 1)
	m.pamt = make([]*pamt1G, m.tdmrPages>>18)
	src, err := mem.RegisterSource("tdx-pamt")
	if err != nil {
		return nil, err
	}
	m.pamtSource = src
	if err := m.reservePAMT(); err != nil {
		return nil, err
	}
	mem.SetGuard(m)
	return m, nil
}

// Config returns the module's options.
func (m *Module) Config() Config { return m.cfg }

// PAMTBytes is the PAMT's memory: the static part sized by TDMR at init, and
// the dynamic page pairs installed now (Dynamic PAMT only).
type PAMTBytes struct {
	Static  uint64
	Dynamic uint64
}

// Total returns static plus dynamic bytes.
func (p PAMTBytes) Total() uint64 { return p.Static + p.Dynamic }

// StaticPAMTBytes returns what the static PAMT costs for a TDMR of tdmrBytes
// (1 GiB aligned): per GiB, PAMT_1G 16 B + PAMT_2M 8 KiB + PAMT_4K 4 MiB
// (static) or a 32 KiB bitmap (dynamic).
func StaticPAMTBytes(tdmrBytes uint64, dynamic bool) uint64 {
	gib := (tdmrBytes + addr.Size1G - 1) / addr.Size1G
	per := uint64(16 + 512*16)
	if dynamic {
		per += (1 << 18) / 8
	} else {
		per += (1 << 18) * 16
	}
	return gib * per
}

// PAMT returns the module's PAMT memory.
func (m *Module) PAMT() PAMTBytes {
	m.mu.Lock()
	defer m.mu.Unlock()
	return PAMTBytes{Static: m.staticBytes, Dynamic: m.pairs * 2 * addr.PageSize}
}

// reservePAMT takes the static PAMT's memory from the host (rounded to
// pages) and marks it PT_RSVD, so that no SEAMCALL accepts it as a TD page.
func (m *Module) reservePAMT() error {
	bytes := StaticPAMTBytes(uint64(m.tdmrPages)*addr.PageSize, m.cfg.DynamicPAMT)
	m.staticBytes = bytes
	pages := (bytes + addr.PageSize - 1) / addr.PageSize
	for pages > 0 {
		o := addr.Order(18)
		for uint64(1)<<o > pages {
			o--
		}
		pfn, err := m.mem.Alloc(nil, hostmem.Request{Order: o, Source: m.pamtSource})
		if err != nil {
			return fmt.Errorf("tdxmodule: reserving %d bytes of PAMT: %w", bytes, err)
		}
		m.pamtBacking = append(m.pamtBacking, pfn)
		m.setRange(pfn, o, pamtEnt{pt: PTRSVD})
		pages -= 1 << o
	}
	return nil
}

// pamtEnt is one PAMT entry: 8 bytes here (16 in the module; the owner is a
// TD index rather than a TDR HPA, and BEPOCH is 32 bits — the model never
// runs 4 billion TRACKs).
type pamtEnt struct {
	bepoch uint32
	owner  uint16
	pt     uint8
	lock   uint8 // sharex: bit 7 exclusive, bits 6:0 readers
}

// pamt2M is a PAMT_2M entry plus, while the range is used at 4K, its 512
// PAMT_4K entries (static: created on first use; dynamic: only while a page
// pair is installed). It is 16 bytes: what only a range used at 4K needs
// is behind x, so a range mapped or free at 2M costs no more.
type pamt2M struct {
	pamtEnt
	x *pamt4K
}

// pamt4K is the 4K level of a 2M range: its PAMT_4K entries (a 4 KiB
// array of its own, not a 4864-byte size class with this header), the
// Dynamic PAMT page pair that backs them, and their count.
type pamt4K struct {
	kids *[512]pamtEnt
	pair [2]addr.PFN
	used uint16 // 4K entries not NDA (the module's page_count)
}

// ext is the range's 4K level, made on first use.
func (n *pamt2M) ext() *pamt4K {
	if n.x == nil {
		n.x = &pamt4K{}
	}
	return n.x
}

// used is how many of the range's 4K entries are not NDA.
func (n *pamt2M) used() uint16 {
	if n.x == nil {
		return 0
	}
	return n.x.used
}

// kids is the range's PAMT_4K array, nil while it has none.
func (n *pamt2M) kids() *[512]pamtEnt {
	if n.x == nil {
		return nil
	}
	return n.x.kids
}

type pamt1G struct {
	pamtEnt
	c      [512]pamt2M
	bitmap *[1 << 12]uint64 // Dynamic PAMT: 1 bit per 4K page donated as PAMT backing
}

func (m *Module) gib(pfn addr.PFN) *pamt1G {
	g := m.pamt[pfn>>18]
	if g == nil {
		g = &pamt1G{}
		m.pamt[pfn>>18] = g
	}
	return g
}

func (m *Module) node2M(pfn addr.PFN) *pamt2M { return &m.gib(pfn).c[(pfn>>9)&511] }

func (n *pamt2M) kid(pfn addr.PFN) *pamtEnt {
	x := n.ext()
	if x.kids == nil {
		x.kids = new([512]pamtEnt)
	}
	return &x.kids[pfn&511]
}

func (m *Module) bitmapBit(pfn addr.PFN) bool {
	g := m.gib(pfn)
	return g.bitmap != nil && g.bitmap[(pfn&(1<<18-1))>>6]&(1<<(pfn&63)) != 0
}

func (m *Module) setBitmapBit(pfn addr.PFN, v bool) {
	g := m.gib(pfn)
	if g.bitmap == nil {
		g.bitmap = new([1 << 12]uint64)
	}
	w := &g.bitmap[(pfn&(1<<18-1))>>6]
	if v {
		*w |= 1 << (pfn & 63)
	} else {
		*w &^= 1 << (pfn & 63)
	}
}

// setRange writes e over an aligned block at the coarsest PAMT level that
// fits (used for PT_RSVD at init).
func (m *Module) setRange(pfn addr.PFN, order addr.Order, e pamtEnt) {
	switch {
	case order >= 18:
		for p := pfn; p < pfn+addr.PFN(1)<<order; p += 1 << 18 {
			m.gib(p).pamtEnt = e
		}
	case order >= 9:
		for p := pfn; p < pfn+addr.PFN(1)<<order; p += 1 << 9 {
			m.node2M(p).pamtEnt = e
		}
	default:
		for p := pfn; p < pfn+addr.PFN(1)<<order; p++ {
			n := m.node2M(p)
			*n.kid(p) = e
			if e.pt != PTNDA {
				n.x.used++
			}
		}
	}
}

// leaf finds the PAMT entry that describes pfn (the walk to the actual leaf
// size) and its level. In Dynamic PAMT a 2M range without a pair and without
// a 2M owner has no 4K level: leaf returns that 2M NDA entry.
func (m *Module) leaf(pfn addr.PFN) (*pamtEnt, addr.Level) {
	g := m.gib(pfn)
	if g.pt != PTNDA {
		return &g.pamtEnt, addr.Level1G
	}
	n := &g.c[(pfn>>9)&511]
	if m.cfg.DynamicPAMT {
		if n.pt != PTPAMT {
			return &n.pamtEnt, addr.Level2M
		}
		return n.kid(pfn), addr.Level4K
	}
	if n.pt != PTNDA {
		return &n.pamtEnt, addr.Level2M
	}
	return n.kid(pfn), addr.Level4K
}

// CheckSplit is the hostmem split guard: a folio split below the size a
// Secure EPT maps part of it at leaves a huge S-EPT mapping over pieces
// the host now manages separately (the TDX huge-page series v3).
func (m *Module) CheckSplit(pfn addr.PFN, order, newOrder addr.Order) error {
	return m.eachPAMTLeaf(pfn, order, func(p addr.PFN, e *pamtEnt, lvl addr.Level) error {
		if e.pt == PTREG && lvl.Order() > newOrder {
			return fmt.Errorf("PAMT: %s is mapped by TD %d at %s; the folio is split to order %d", p.HPA(), e.owner, lvl, newOrder)
		}
		return nil
	})
}

// CheckFree is the hostmem guard: a block must not go back to the host
// while PAMT still assigns any page of it, or while it backs the PAMT.
func (m *Module) CheckFree(pfn addr.PFN, order addr.Order) error {
	return m.eachPAMTLeaf(pfn, order, func(p addr.PFN, e *pamtEnt, lvl addr.Level) error {
		if e.pt != PTNDA {
			owner := ""
			if int(e.owner) < len(m.byID) && m.byID[e.owner] != nil {
				owner = fmt.Sprintf(" owned by TD %d", e.owner)
			}
			return fmt.Errorf("PAMT: %s is %s at %s%s", p.HPA(), PTName(e.pt), lvl, owner)
		}
		if m.cfg.DynamicPAMT && m.bitmapBit(p) {
			return fmt.Errorf("PAMT: %s is a donated Dynamic PAMT page", p.HPA())
		}
		return nil
	})
}

// eachPAMTLeaf calls fn, under the module's lock, for each PAMT entry
// describing the block [pfn, pfn+2^order), one call per entry (a 2M or 1G
// entry once), and returns fn's first error. Pages past the PAMT's memory
// have no entry.
func (m *Module) eachPAMTLeaf(pfn addr.PFN, order addr.Order, fn func(p addr.PFN, e *pamtEnt, lvl addr.Level) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if pfn >= m.memPages {
		return nil
	}
	for p := pfn; p < pfn+addr.PFN(1)<<order; {
		e, lvl := m.leaf(p)
		if err := fn(p, e, lvl); err != nil {
			return err
		}
		step := addr.PFN(1)
		if lvl != addr.Level4K && !(m.cfg.DynamicPAMT && m.gib(p).bitmap != nil) {
			size := addr.PFN(1) << lvl.Order()
			step = size - p&(size-1)
		}
		p += step
	}
	return nil
}

// lockset collects the sharex locks a call takes, to release them at its end.
type lockset struct {
	held    []lockRef
	entries []*septEntry // SEPT entries locked with TDEL
}

// tryEntry takes a SEPT entry's host lock (TDEL bit).
func (ls *lockset) tryEntry(e *septEntry) bool {
	if e.locked() {
		return false
	}
	*e |= seLockBit
	ls.entries = append(ls.entries, e)
	return true
}

type lockRef struct {
	p    *uint8
	excl bool
}

const lockExcl = 0x80

// try takes a sharex lock: no waiting, false when busy.
func (ls *lockset) try(p *uint8, excl bool) bool {
	if excl {
		if *p != 0 {
			return false
		}
		*p = lockExcl
	} else {
		if *p&lockExcl != 0 || *p == 0x7f {
			return false
		}
		*p++
	}
	ls.held = append(ls.held, lockRef{p, excl})
	return true
}

func (ls *lockset) release() {
	for i := len(ls.held) - 1; i >= 0; i-- {
		r := ls.held[i]
		if r.excl {
			*r.p = 0
		} else {
			*r.p--
		}
	}
	ls.held = ls.held[:0]
	for _, e := range ls.entries {
		*e &^= seLockBit
	}
	ls.entries = ls.entries[:0]
}

func (m *Module) bitmapAny2M(pfn addr.PFN) bool {
	g := m.gib(pfn)
	if g.bitmap == nil {
		return false
	}
	base := uint64(pfn&(1<<18-1)) &^ 511
	return m.bitmapAnyRange(g, base, base+512)
}

// PendHostInterrupt leaves a host interrupt pending: the next SEAMCALL
// that polls for one (is_interrupt_pending_host_side()) sees it and
// consumes it. Deterministic stand-in for an IRQ arriving mid-SEAMCALL.
func (m *Module) PendHostInterrupt() {
	m.mu.Lock()
	m.hostIRQ = true
	m.mu.Unlock()
}
