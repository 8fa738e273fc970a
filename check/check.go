// Package check holds tdxsim's cross-layer invariants: properties that tie
// KVM's mirror root, the TDX module's Secure EPT and PAMT, guest_memfd, and
// the host allocator together, and that no single layer can check alone.
//
// A check reads model state without taking model locks, so it runs where
// nothing is in flight: between timeline steps, with every simulated thread
// parked or done. Each violation names its invariant and the objects
// involved; the caller adds the step.
package check

import (
	"fmt"
	"maps"
	"slices"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// Invariant names, as reports and fuzz summaries count them.
const (
	// MirrorSEPT: the mirror root and the Secure EPT hold the same private
	// leaves (GPA, level, PFN), both ways.
	MirrorSEPT = "mirror_sept_agree"
	// PrivateOwned: every PFN a Secure EPT maps is PAMT-assigned (PT_REG)
	// to that TD at that level, allocated in the host, and the page
	// guest_memfd holds at that GFN's index (the use-after-free
	// window is a mapped page that is none of these).
	PrivateOwned = "private_page_owned"
	// MappingLevel: no private leaf is larger than guest_memfd's mapping
	// order, spans GFNs that are not all private, or leaves its memslot
	// (the TDX huge-page series v3).
	MappingLevel = "mapping_level_allowed"
	// SharedNotPrivate: a shared GPA is never backed by a page the PAMT
	// assigns to a TD, nor by one holding a TD's private content.
	SharedNotPrivate = "shared_not_private"
	// DPAMT: Dynamic PAMT pairs exist exactly for the 2 MiB ranges that
	// hold 4K private pages, S-EPT pages or control pages, with matching
	// refcounts.
	DPAMT = "dpamt_refcounts"
	// Charged: every page allocated for a VM is charged to its account.
	Charged = "allocations_charged"
	// CachePool: every page taken from a cache is freed to the pool it
	// came from (Dynamic PAMT v4 "KVM: TDX: Add x86 ops for external spt cache").
	CachePool = "cache_pool"
	// NoUseAfterFree: no page is freed while referenced or assigned to a
	// TD, freed twice, or used while free.
	NoUseAfterFree = "no_use_after_free"
	// GuestReadsBack: the guest reads what it wrote, or zero after accept,
	// and never takes an unexpected #VE on memory it accepted.
	GuestReadsBack = "guest_reads_back"
	// LockOrder: no lock-order cycle, no sleep in atomic context.
	LockOrder = "lock_order"
	// NoDeadlock: the deterministic scheduler never finds every thread
	// blocked.
	NoDeadlock = "no_deadlock"
	// ConversionProgress: a guest's MapGPA completes; the host never
	// answers TDVMCALL_RETRY until the guest gives up ("KVM: TDX: Drop superfluous page pinning in S-EPT management": a
	// reference guest_memfd cannot tell from a transient one blocks
	// in-place conversion forever).
	ConversionProgress = "conversion_progress"
	// NoKVMBug: no KVM_BUG_ON.
	NoKVMBug = "no_kvm_bug"
	// Events: any other rule a layer reports as broken.
	Events = "no_violation_events"
	// Teardown: after teardown nothing is owned by or charged to a TD.
	Teardown = "teardown_reclaims_all"
)

// Violation is one broken invariant.
type Violation struct {
	Invariant string
	// Objects names what is involved: TD, GPA, PFN, range.
	Objects string
	Detail  string
}

func (v Violation) String() string {
	if v.Objects == "" {
		return v.Invariant + ": " + v.Detail
	}
	return v.Invariant + ": " + v.Objects + ": " + v.Detail
}

// TD is what the checks see of one live TD.
type TD struct {
	Name string
	VM   *kvm.VM
	TD   *tdx.TD
	Gmem *gmem.File
}

// World is the state the per-step invariants read.
type World struct {
	Host        *tdx.Host
	DynamicPAMT bool
	TDs         []TD
	// DeadTornDown: a TD killed by KVM_BUG_ON was torn down already; the
	// Dynamic PAMT references of what it could not reclaim were left as
	// they were, so dpamt_refcounts is not evaluated.
	DeadTornDown bool
}

// maxPerInvariant bounds the violations one invariant reports per call:
// the first few say what is wrong; thousands say nothing more.
const maxPerInvariant = 5

type collector struct {
	out []Violation
	n   map[string]int
	ran map[string]bool
}

func (c *collector) ran1(inv string) { c.ran[inv] = true }

func (c *collector) add(inv, objects, format string, args ...any) {
	c.n[inv]++
	if c.n[inv] <= maxPerInvariant {
		c.out = append(c.out, Violation{Invariant: inv, Objects: objects, Detail: fmt.Sprintf(format, args...)})
	}
}

// Result is what Step found: the invariants evaluated, and the violations.
type Result struct {
	Ran        []string
	Violations []Violation
}

// Step evaluates the per-step invariants over w.
func Step(w World) Result {
	c := &collector{n: map[string]int{}, ran: map[string]bool{}}
	anyBugged := false
	for i := range w.TDs {
		td := &w.TDs[i]
		if bugged, _ := td.VM.Bugged(); bugged {
			// After KVM_BUG_ON the VM is dead and its mirror root
			// and S-EPT no longer agree by design (the failed
			// SEAMCALL left the S-EPT as it was); what still must
			// hold for it is that no page it may map is reused
			// (no_use_after_free) and what teardown gives back.
			anyBugged = true
			continue
		}
		c.private(w.Host, td)
		c.shared(w.Host, td)
		c.charged(w.Host, td)
	}
	if w.DynamicPAMT && !anyBugged && !w.DeadTornDown { // a dead TD's DPAMT references are left as they were
		c.dpamt(w)
	}
	var r Result
	for _, inv := range []string{MirrorSEPT, PrivateOwned, MappingLevel, SharedNotPrivate, Charged, DPAMT} {
		if c.ran[inv] {
			r.Ran = append(r.Ran, inv)
		}
	}
	r.Violations = c.out
	return r
}

// private checks both directions between the mirror root and the S-EPT,
// then every S-EPT leaf against the PAMT, the host allocator, guest_memfd
// and KVM's view of the GFN.
func (c *collector) private(h *tdx.Host, td *TD) {
	c.ran1(MirrorSEPT)
	c.ran1(PrivateOwned)
	c.ran1(MappingLevel)
	m := td.TD.MMU()
	tdr := td.TD.TDR()
	var mirror int
	m.Leaves(mmu.MirrorRoot, func(l mmu.Leaf) bool {
		mirror++
		ent, ok := h.Mod.Lookup(tdr, l.GFN.GPA())
		if !ok || ent.Level != l.Level || ent.HPA != l.PFN.HPA() {
			c.add(MirrorSEPT, fmt.Sprintf("%s %s", td.Name, l.GFN.GPA()), "mirror maps %s at %s, S-EPT has %s at %s (%s)",
				l.Level, l.PFN.HPA(), ent.Level, ent.HPA, tdxmodule.SeptStateName(ent.State))
		}
		return true
	})
	var sept int
	h.Mod.SEPTLeaves(tdr, func(s tdxmodule.SEPTLeaf) bool {
		sept++
		gfn := s.GPA.GFN()
		objects := leafObjects{td.Name, s.GPA, s.Level, s.HPA.PFN()}
		if l, ok := m.Lookup(mmu.MirrorRoot, gfn); !ok || l.Level != s.Level || l.PFN.HPA() != s.HPA {
			c.add(MirrorSEPT, objects.String(), "S-EPT leaf (%s) has no matching mirror leaf", tdxmodule.SeptStateName(s.State))
		}
		c.owned(h, td, tdr, s, objects)
		c.level(td, gfn, s.Level, objects)
		return true
	})
	if mirror != sept {
		c.add(MirrorSEPT, td.Name, "%d mirror leaves, %d S-EPT leaves", mirror, sept)
	}
}

func (c *collector) owned(h *tdx.Host, td *TD, tdr addr.PFN, s tdxmodule.SEPTLeaf, objects leafObjects) {
	pfn := s.HPA.PFN()
	if pg := h.Mod.PAMTOf(pfn); pg.Type != tdxmodule.PTREG || pg.Owner != tdr || pg.Level != s.Level {
		c.add(PrivateOwned, objects.String(), "PAMT says %s at %s owned by TDR %s, want PT_REG at %s owned by TDR %s",
			tdxmodule.PTName(pg.Type), pg.Level, pg.Owner.HPA(), s.Level, tdr.HPA())
	}
	if _, ok := h.Mem.FolioOf(pfn); !ok {
		c.add(PrivateOwned, objects.String(), "the host allocator has the page free while the S-EPT maps it")
		return
	}
	slot := td.VM.SlotAt(s.GPA.GFN())
	if slot == nil {
		c.add(PrivateOwned, objects.String(), "mapped outside every memslot")
		return
	}
	f := slot.GmemFile()
	if f == nil {
		c.add(PrivateOwned, objects.String(), "memslot %d has no guest_memfd", slot.ID())
		return
	}
	// The first and last page of the leaf: a huge leaf over pages of other
	// indexes (a folio mapped at the wrong GFN) differs at one of them.
	n := addr.PFN(s.Level.Pages())
	for _, k := range []addr.PFN{0, n - 1} {
		gfn := s.GPA.GFN() + addr.GFN(k)
		held, ok := f.PFNAt(gmem.Index(slot, gfn))
		if !ok || held != pfn+k {
			c.add(PrivateOwned, objects.String(), "GFN %#x maps PFN %s, guest_memfd holds %s at index %#x (present %v)",
				uint64(gfn), pfn+k, held, gmem.Index(slot, gfn), ok)
			return
		}
	}
}

func (c *collector) level(td *TD, gfn addr.GFN, level addr.Level, objects leafObjects) {
	if level == addr.Level4K {
		return
	}
	slot := td.VM.SlotAt(gfn)
	if slot == nil {
		return // reported by owned
	}
	n := addr.GFN(level.Pages())
	if gfn < slot.BaseGFN() || gfn+n > slot.BaseGFN()+addr.GFN(slot.NPages()) {
		c.add(MappingLevel, objects.String(), "the leaf crosses memslot %d's edge", slot.ID())
		return
	}
	if o := gmem.MappingOrder(slot, gfn); o < level.Order() {
		c.add(MappingLevel, objects.String(), "guest_memfd allows order %d here, the S-EPT maps order %d", o, level.Order())
		return
	}
	if f := slot.GmemFile(); f != nil && f.InPlace() {
		i := gmem.Index(slot, gfn)
		if !f.RangePrivate(i, i+uint64(n)) {
			c.add(MappingLevel, objects.String(), "the leaf spans shared indexes of the in-place guest_memfd")
		}
	} else if !td.VM.RangeIsPrivate(gfn, gfn+n) {
		c.add(MappingLevel, objects.String(), "the leaf spans GFNs whose attributes are not all private")
	}
}

// shared checks every leaf of the direct (shared) root.
func (c *collector) shared(h *tdx.Host, td *TD) {
	c.ran1(SharedNotPrivate)
	td.TD.MMU().Leaves(mmu.DirectRoot, func(l mmu.Leaf) bool {
		objects := func() string { return fmt.Sprintf("%s shared %s %s", td.Name, l.GFN.GPA(), l.PFN) }
		for k := addr.PFN(0); k < addr.PFN(l.Level.Pages()); k++ {
			pfn := l.PFN + k
			if pg := h.Mod.PAMTOf(pfn); pg.Type != tdxmodule.PTNDA {
				c.add(SharedNotPrivate, objects(), "backed by %s %s in the PAMT (owner TDR %s)", tdxmodule.PTName(pg.Type), pfn, pg.Owner.HPA())
				return true
			}
			if tag := h.Mem.Tag(pfn); isPrivateTag(tag) {
				c.add(SharedNotPrivate, objects(), "page %s holds private content of TD %d (tag %#x) not cleared", pfn, tag.Owner(), uint64(tag))
				return true
			}
		}
		return true
	})
}

// leafObjects names an S-EPT leaf in a violation (TD, GPA, level, PFN).
// It is formatted only when a violation is recorded: the checks walk every
// leaf after every step, and formatting each one cost more than checking it.
type leafObjects struct {
	td    string
	gpa   addr.GPA
	level addr.Level
	pfn   addr.PFN
}

func (o leafObjects) String() string {
	return fmt.Sprintf("%s %s %s %s", o.td, o.gpa, o.level, o.pfn)
}

// isPrivateTag reports whether a tag is a guest's private write: the guest
// tags pages with its owner id and gfn<<1, the low bit set for shared.
func isPrivateTag(t hostmem.Tag) bool {
	return t.Owner() != 0 && t.Version()&1 == 0
}

func (c *collector) charged(h *tdx.Host, td *TD) {
	c.ran1(Charged)
	if u := h.Mem.Usage(td.VM.Account()); u.Uncharged != 0 {
		c.add(Charged, td.Name, "%d pages allocated for the VM are not charged to its account", u.Uncharged)
	}
}

// dpamt compares the DPAMT pairs installed with what the TDs need, and
// with the references of the pages the kernel leaked on purpose (it
// never put them: tdx.Host.LeakedDPAMTRefs).
func (c *collector) dpamt(w World) {
	c.ran1(DPAMT)
	need := w.Host.LeakedDPAMTRefs()
	for _, td := range w.TDs {
		for r, n := range td.TD.DPAMTNeeded() {
			need[r] += n
		}
	}
	got := w.Host.DPAMTRanges()
	if got != len(need) {
		c.add(DPAMT, "", "%d 2 MiB ranges hold a DPAMT pair, %d need one", got, len(need))
	}
	// KVM's refcounts against the module's own PAMT: a nonzero refcount
	// whose pair the module does not have is what a later
	// atomic_inc_not_zero() trusts (tdx_pamt_get()).
	if pairs := w.Host.Mod.PAMT().Dynamic / (2 * addr.PageSize); pairs != uint64(got) {
		c.add(DPAMT, "", "the TDX module holds %d Dynamic PAMT pairs, KVM's refcounts count %d ranges", pairs, got)
	}
	for _, r := range slices.Sorted(maps.Keys(need)) { // in address order: reports do not depend on map order
		if got := w.Host.DPAMTRef(r << 9); got != need[r] {
			c.add(DPAMT, fmt.Sprintf("range %s", (r<<9).HPA()), "refcount %d, want %d", got, need[r])
		}
	}
}

// EventInvariant maps a rule a layer reported (an event.KindViolation
// name) to the invariant it breaks.
func EventInvariant(rule string) string {
	switch rule {
	case hostmem.RuleWrongSource:
		return CachePool
	case hostmem.RuleFreeTDXOwned, hostmem.RuleFreeReferenced, hostmem.RuleDoubleFree,
		hostmem.RuleReadUnallocated, hostmem.RuleWriteUnallocated, hostmem.RuleRefUnderflow:
		return NoUseAfterFree
	case hostmem.RuleSplitMappedHuge, mmu.RuleHugeOverMixed:
		return MappingLevel
	}
	return Events
}

// eventInvariant is the invariant a reported event breaks: a deadlock
// by its kind, a rule violation by its rule.
func eventInvariant(e event.Event) string {
	if e.Kind == event.KindDeadlock {
		return NoDeadlock
	}
	return EventInvariant(e.Name)
}
