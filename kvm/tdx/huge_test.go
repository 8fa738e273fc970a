package tdx_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// Huge private pages (the TDX huge-page series v3, "KVM: TDX huge page support for private
// memory" v3): one test per behaviour of the series.

const size2M = addr.Size2M

// acceptAt runs TDG.MEM.PAGE.ACCEPT at level until it is not BUSY.
func acceptAt(th *sched.Thread, v *tdx.VCPU, gpa uint64, level addr.Level) (tdxmodule.Status, error) {
	for tries := 0; ; tries++ {
		st, err := v.Accept(th, addr.GPA(gpa), level)
		if err != nil || !st.HasCode(tdxmodule.OperandBusy) || tries > 1000 {
			return st, err
		}
		th.Yield()
	}
}

// onVCPU0 runs fn on vCPU 0 in its own thread and fails the test on error.
func (e *env) onVCPU0(th *sched.Thread, fn func(vt *sched.Thread, v *tdx.VCPU) error) {
	e.t.Helper()
	errs := e.vcpus(th, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
		if i != 0 {
			return nil
		}
		return fn(vt, v)
	})
	if errs[0] != nil {
		e.t.Fatal(errs[0])
	}
}

// leafAt is the mirror leaf covering gpa.
func (e *env) leafAt(gpa uint64) (mmu.Leaf, bool) {
	return e.td.MMU().Lookup(mmu.MirrorRoot, addr.GPA(gpa).GFN())
}

// wantLevel checks the mirror maps gpa with a leaf of level.
func (e *env) wantLevel(gpa uint64, level addr.Level) {
	e.t.Helper()
	l, ok := e.leafAt(gpa)
	if !ok || l.Level != level {
		e.t.Errorf("gpa %#x: mirror leaf %+v (present %v), want level %s", gpa, l, ok, level)
	}
}

// agreeLeaves checks that every mirror leaf is an S-EPT leaf at the same
// GPA, level and HPA.
func (e *env) agreeLeaves() {
	e.t.Helper()
	e.td.MMU().Leaves(mmu.MirrorRoot, func(l mmu.Leaf) bool {
		ent, ok := e.mod.Lookup(e.td.TDR(), l.GFN.GPA())
		if !ok || ent.Level != l.Level || ent.HPA != l.PFN.HPA() {
			e.t.Errorf("mirror leaf %s %s %s, S-EPT %+v", l.GFN, l.Level, l.PFN, ent)
			return false
		}
		return true
	})
}

// dpamtAgrees checks KVM's Dynamic PAMT refcounts against what needs a
// pair: each 2 MiB host range counts its 4K private leaves, its S-EPT pages
// and the TD's control pages in it; 2M and 1G leaves count nothing.
func (e *env) dpamtAgrees() {
	e.t.Helper()
	want := e.td.DPAMTNeeded()
	if got := e.host.DPAMTRanges(); got != len(want) {
		e.t.Errorf("%d 2M ranges hold a Dynamic PAMT pair, want %d", got, len(want))
	}
	for r, n := range want {
		if got := e.host.DPAMTRef(r << 9); got != n {
			e.t.Errorf("2M range at %s: refcount %d, want %d", (r << 9).HPA(), got, n)
		}
	}
}

func hugeOpts(seed uint64) opts {
	return opts{seed: seed, memBytes: 64 * addr.MiB, dynamic: true, huge: true}
}

// The largest level of a private fault is the smallest of guest_memfd's
// mapping order, the slot's lpage info (mixed attributes, guest inhibit)
// and the guest's accept level; a 2M mapping is TDH.MEM.PAGE.AUG at 2M and
// takes no Dynamic PAMT pair.
func TestHugeMappingLevel(t *testing.T) {
	runClean(t, hugeOpts(1), func(th *sched.Thread, e *env) {
		// Mixed attributes in [8M, 10M) before the guest asks for it.
		e.mustSetAttrs(th, 8*addr.MiB+4*addr.KiB, 4*addr.KiB, false)
		e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error {
			if st, err := acceptAt(vt, v, 0, addr.Level2M); err != nil || st != tdxmodule.Success {
				t.Errorf("2M accept at 0: %v, %v", st, err)
			}
			if st, err := acceptAt(vt, v, 4*addr.MiB+4*addr.KiB, addr.Level4K); err != nil || st != tdxmodule.Success {
				t.Errorf("4K accept at 4M+4K: %v, %v", st, err)
			}
			// The mixed 2M range maps 4K; the guest's 2M accept then
			// finds a page table and falls back (PAGE_SIZE_MISMATCH).
			if st, err := acceptAt(vt, v, 8*addr.MiB, addr.Level2M); err != nil || !st.HasCode(tdxmodule.PageSizeMismatch) {
				t.Errorf("2M accept over mixed attributes: %v, %v; want PAGE_SIZE_MISMATCH", st, err)
			}
			return nil
		})
		e.wantLevel(0, addr.Level2M)
		e.wantLevel(4*addr.MiB+4*addr.KiB, addr.Level4K)
		e.wantLevel(8*addr.MiB, addr.Level4K)
		if _, ok := e.leafAt(4 * addr.MiB); ok {
			t.Errorf("a 4K accept mapped more than its page")
		}
		slot := e.m.VM.SlotAt(addr.GPA(4 * addr.MiB).GFN())
		if !slot.GuestInhibited(addr.Level2M, addr.GPA(4*addr.MiB).GFN()) || slot.HugePageAllowed(addr.Level2M, addr.GPA(4*addr.MiB).GFN()) {
			t.Errorf("a 4K accept must set the guest inhibit on its 2M range")
		}
		if got := e.td.Stats().HugePagesAugmented; got != 1 {
			t.Errorf("%d huge AUGs, want 1", got)
		}
		l, _ := e.leafAt(0)
		if e.host.DPAMTRef(l.PFN) != 0 {
			t.Errorf("a 2M mapping took Dynamic PAMT references (%d)", e.host.DPAMTRef(l.PFN))
		}
		e.agreeLeaves()
		e.dpamtAgrees()
		e.teardown(th)
	})
}

// hugepages=off: guest_memfd has 4K folios, so its mapping order is 0 and
// nothing is mapped huge even when the guest accepts 2M.
func TestHugePagesOff(t *testing.T) {
	o := hugeOpts(1)
	o.mmu.HugePages = mmu.HugePagesOff
	runClean(t, o, func(th *sched.Thread, e *env) {
		e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error {
			if st, err := acceptAt(vt, v, 0, addr.Level2M); err != nil || !st.HasCode(tdxmodule.PageSizeMismatch) {
				t.Errorf("2M accept with hugepages off: %v, %v; want PAGE_SIZE_MISMATCH", st, err)
			}
			return nil
		})
		e.wantLevel(0, addr.Level4K)
		if e.m.Gmem.PageOrder() != 0 {
			t.Errorf("hugepages=off made a HugeTLB guest_memfd")
		}
		e.teardown(th)
	})
}

// hugepages=1G with a module that allows 1G AUG: a plain access maps 1G
// PENDING; a 2M accept splits it to 2M (DEMOTE at 1G, no page pair) and
// inhibits 1G; a 4K accept then splits one 2M leaf (DEMOTE at 2M with the
// range's page pair).
func TestHuge1G(t *testing.T) {
	o := opts{seed: 1, memBytes: 1 << 30, dynamic: true, huge: true, allow1G: true}
	o.mmu.HugePages = mmu.HugePages1G
	runClean(t, o, func(th *sched.Thread, e *env) {
		e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error {
			if _, err := v.Read(vt, 4*addr.KiB); !errors.Is(err, tdx.ErrVE) {
				t.Errorf("read of unaccepted memory: %v, want #VE", err)
			}
			e.wantLevel(0, addr.Level1G)
			if st, err := acceptAt(vt, v, 0, addr.Level2M); err != nil || st != tdxmodule.Success {
				t.Errorf("2M accept inside a 1G page: %v, %v", st, err)
			}
			e.wantLevel(0, addr.Level2M)
			e.wantLevel(512*addr.MiB, addr.Level2M)
			if st, err := acceptAt(vt, v, 2*addr.MiB+4*addr.KiB, addr.Level4K); err != nil || st != tdxmodule.Success {
				t.Errorf("4K accept inside a 2M page: %v, %v", st, err)
			}
			return nil
		})
		e.wantLevel(2*addr.MiB, addr.Level4K)
		e.wantLevel(4*addr.MiB, addr.Level2M)
		s := e.td.MMU().Stats()
		if s.Splits[addr.Level1G] != 1 || s.Splits[addr.Level2M] != 1 {
			t.Errorf("splits %v, want one at 1G and one at 2M", s.Splits)
		}
		if got := e.c.Calls()["TDH.MEM.PAGE.DEMOTE"]; got != 2 {
			t.Errorf("%d DEMOTEs, want 2", got)
		}
		e.agreeLeaves()
		e.dpamtAgrees()
		e.teardown(th)
	})
}

// A split of a mirror leaf needs mmu_lock for write: under the read lock it
// is refused and nothing changes (patch 09); under the write lock it is
// BLOCK, TRACK, DEMOTE, with pages from the per-VM split cache.
func TestSplitOnlyUnderWriteLock(t *testing.T) {
	e := runTD(t, hugeOpts(1), func(th *sched.Thread, e *env) {
		e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error {
			_, err := acceptAt(vt, v, 0, addr.Level2M)
			return err
		})
		m, lock, r := e.td.MMU(), e.m.VM.MMULock(), e.privateRange(1, 2)
		if err := m.TopUpSplitCache(th); err != nil {
			t.Fatal(err)
		}
		lock.RLock(th)
		err := m.SplitCrossBoundary(th, r)
		lock.RUnlock(th)
		if !errors.Is(err, errno.EBUSY) {
			t.Errorf("split under read mmu_lock: %v, want EBUSY", err)
		}
		e.wantLevel(0, addr.Level2M)
		charged := e.host.Mem.Usage(e.m.VM.Account()).Charged
		lock.Lock(th)
		err = m.SplitCrossBoundary(th, r)
		lock.Unlock(th)
		if err != nil {
			t.Fatalf("split under write mmu_lock: %v", err)
		}
		e.wantLevel(0, addr.Level4K)
		if got := e.host.Mem.Usage(e.m.VM.Account()).Charged; got != charged {
			t.Errorf("the split allocated under mmu_lock: charged %d -> %d pages", charged, got)
		}
		for _, leaf := range []string{"TDH.MEM.RANGE.BLOCK", "TDH.MEM.TRACK", "TDH.MEM.PAGE.DEMOTE"} {
			if e.c.Calls()[leaf] == 0 {
				t.Errorf("no %s for the split", leaf)
			}
		}
		e.agreeLeaves()
		e.dpamtAgrees()
		e.teardown(th)
	})
	if n := e.violations(mmu.RuleLockNotHeld)[mmu.RuleLockNotHeld]; n != 1 {
		t.Errorf("%d mmu.lock-not-held reports, want 1 (the read-locked split)", n)
	}
	e.clean()
}

// acceptTagged accepts [lo, hi) at 2M on v and writes each page's GPA as
// its tag.
func acceptTagged(vt *sched.Thread, v *tdx.VCPU, lo, hi uint64) error {
	for g := lo; g < hi; g += size2M {
		if st, err := acceptAt(vt, v, g, addr.Level2M); err != nil || st != tdxmodule.Success {
			return errors.Join(err, errors.New(st.String()))
		}
	}
	for g := lo; g < hi; g += addr.PageSize {
		if err := v.Write(vt, addr.GPA(g), hostmem.Tag(g|1)); err != nil {
			return err
		}
	}
	return nil
}

// readTags checks the guest reads back what acceptTagged wrote.
func readTags(t *testing.T, vt *sched.Thread, v *tdx.VCPU, gpas ...uint64) {
	t.Helper()
	for _, g := range gpas {
		if got, err := v.Read(vt, addr.GPA(g)); err != nil || got != hostmem.Tag(g|1) {
			t.Errorf("gpa %#x reads %#x (%v), want %#x", g, uint64(got), err, g|1)
		}
	}
}

// An attribute change whose range cuts a 2M mapping splits exactly that
// leaf before zapping the changed GFNs; the rest of the guest's memory is
// untouched. A range that ends on the mapping's edges splits nothing.
func TestCrossBoundarySplitOnAttributeChange(t *testing.T) {
	runClean(t, hugeOpts(1), func(th *sched.Thread, e *env) {
		e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error { return acceptTagged(vt, v, 0, 4*addr.MiB) })
		l0, _ := e.leafAt(0)
		e.mustSetAttrs(th, 4*addr.KiB, 4*addr.KiB, false)
		e.wantLevel(0, addr.Level4K)
		e.wantLevel(8*addr.KiB, addr.Level4K)
		e.wantLevel(2*addr.MiB, addr.Level2M)
		if _, ok := e.leafAt(4 * addr.KiB); ok {
			t.Errorf("the converted page is still mapped private")
		}
		if got := e.host.DPAMTRef(l0.PFN); got != 511 {
			t.Errorf("split range's refcount %d, want 511 (512 from DEMOTE, one removed)", got)
		}
		e.mustSetAttrs(th, 2*addr.MiB, 2*addr.MiB, false)
		if s := e.td.MMU().Stats(); s.Splits[addr.Level2M] != 1 {
			t.Errorf("%d 2M splits, want 1: an aligned range splits nothing", s.Splits[addr.Level2M])
		}
		if got := e.td.Stats().HugePagesRemoved; got != 1 {
			t.Errorf("%d huge leaves removed, want 1", got)
		}
		e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error {
			readTags(t, vt, v, 0, 8*addr.KiB, 2*addr.MiB-4*addr.KiB)
			return nil
		})
		e.agreeLeaves()
		e.dpamtAgrees()
		e.teardown(th)
	})
}

// A split that cannot get its pages (the host is out of memory when the
// split cache is topped up) aborts the conversion with ENOMEM and changes
// nothing: attributes, mappings and guest data stay.
func TestFailedSplitAbortsConversion(t *testing.T) {
	runClean(t, hugeOpts(1), func(th *sched.Thread, e *env) {
		// A plain access maps 2M PENDING and the 2M accept then needs no
		// exit, so nothing has topped the split cache up yet.
		e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error {
			if _, err := v.Read(vt, 0); !errors.Is(err, tdx.ErrVE) {
				return fmt.Errorf("read of unaccepted memory: %v, want #VE", err)
			}
			return acceptTagged(vt, v, 0, 2*addr.MiB)
		})
		var hog []addr.PFN
		for {
			p, err := e.host.Mem.Alloc(th, hostmem.Request{Source: hostmem.SourceBuddy})
			if err != nil {
				break
			}
			hog = append(hog, p)
		}
		err := e.setAttrs(th, 4*addr.KiB, 4*addr.KiB, false)
		if !errors.Is(err, errno.ENOMEM) {
			t.Errorf("conversion with no memory for the split: %v, want ENOMEM", err)
		}
		for _, p := range hog {
			_ = e.host.Mem.Free(th, p, hostmem.SourceBuddy)
		}
		if !e.m.VM.IsPrivate(addr.GPA(4 * addr.KiB).GFN()) {
			t.Errorf("the failed conversion changed the attribute")
		}
		e.wantLevel(0, addr.Level2M)
		if e.m.VM.InvalidateInProgress() != 0 {
			t.Errorf("the failed conversion left an invalidation running")
		}
		e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error {
			readTags(t, vt, v, 4*addr.KiB)
			return nil
		})
		if err := e.setAttrs(th, 4*addr.KiB, 4*addr.KiB, false); err != nil {
			t.Errorf("retry with memory: %v", err)
		}
		e.wantLevel(0, addr.Level4K)
		e.teardown(th)
	})
}

// A guest that accepts 4K inside a 2M PENDING mapping (KVM mapped it 2M on
// a plain access) makes KVM split it, and the guest inhibit keeps the range
// from being mapped 2M again (patches 12-13).
func TestAcceptLevelMismatch(t *testing.T) {
	runClean(t, hugeOpts(1), func(th *sched.Thread, e *env) {
		e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error {
			if _, err := v.Read(vt, 12*addr.KiB); !errors.Is(err, tdx.ErrVE) {
				t.Errorf("read of unaccepted memory: %v, want #VE", err)
			}
			e.wantLevel(0, addr.Level2M)
			if st, err := acceptAt(vt, v, 4*addr.KiB, addr.Level4K); err != nil || st != tdxmodule.Success {
				t.Errorf("4K accept in a 2M PENDING page: %v, %v", st, err)
			}
			e.wantLevel(0, addr.Level4K)
			if _, err := v.Read(vt, 12*addr.KiB); !errors.Is(err, tdx.ErrVE) {
				t.Errorf("a sibling of the accepted page: %v, want #VE (still PENDING)", err)
			}
			return nil
		})
		gfn := addr.GPA(0).GFN()
		slot := e.m.VM.SlotAt(gfn)
		if !slot.GuestInhibited(addr.Level2M, gfn) || !slot.GuestInhibited(addr.Level1G, gfn) || slot.HugePageAllowed(addr.Level2M, gfn) {
			t.Errorf("a 4K accept must inhibit 2M and 1G for its range")
		}
		if s := e.td.MMU().Stats(); s.Splits[addr.Level2M] != 1 {
			t.Errorf("%d splits, want 1", s.Splits[addr.Level2M])
		}
		e.agreeLeaves()
		e.dpamtAgrees()
		e.teardown(th)
	})
}

// The mirror root never merges: once a 2M range is split, even with every
// 4K leaf gone and uniform attributes again, a 2M accept finds the page
// table and maps 4K; TDH.MEM.PAGE.PROMOTE is never called.
func TestNoMerging(t *testing.T) {
	runClean(t, hugeOpts(1), func(th *sched.Thread, e *env) {
		e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error { return acceptTagged(vt, v, 0, 2*addr.MiB) })
		e.mustSetAttrs(th, 4*addr.KiB, 4*addr.KiB, false)
		e.mustSetAttrs(th, 0, 2*addr.MiB, false)
		e.mustSetAttrs(th, 0, 2*addr.MiB, true)
		gfn := addr.GPA(0).GFN()
		if !e.m.VM.SlotAt(gfn).HugePageAllowed(addr.Level2M, gfn) {
			t.Fatalf("setup: the range should be allowed 2M again (uniform, not inhibited)")
		}
		e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error {
			if st, err := acceptAt(vt, v, 0, addr.Level2M); err != nil || !st.HasCode(tdxmodule.PageSizeMismatch) {
				t.Errorf("2M accept over a split range: %v, %v; want PAGE_SIZE_MISMATCH", st, err)
			}
			// The guest falls back to 4K, as Linux does.
			_, err := acceptAt(vt, v, 0, addr.Level4K)
			return err
		})
		e.wantLevel(0, addr.Level4K)
		if got := e.c.Calls()["TDH.MEM.PAGE.PROMOTE"]; got != 0 {
			t.Errorf("KVM called PROMOTE %d times", got)
		}
		e.teardown(th)
	})
}

// Dynamic PAMT at each level (patches 17-18, 21-23): a 2M mapping has no
// page pair; DEMOTE installs the range's pair (no PAMT.ADD) and sets its
// refcount to 512; removing the last 4K page puts it with PAMT.REMOVE.
func TestDynamicPAMTPerLevel(t *testing.T) {
	runClean(t, hugeOpts(1), func(th *sched.Thread, e *env) {
		e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error { return acceptTagged(vt, v, 0, 2*addr.MiB) })
		l, _ := e.leafAt(0)
		adds, removes := e.c.Calls()["TDH.PHYMEM.PAMT.ADD"], e.c.Calls()["TDH.PHYMEM.PAMT.REMOVE"]
		if e.host.DPAMTRef(l.PFN) != 0 {
			t.Errorf("a 2M mapping has a page pair")
		}
		e.mustSetAttrs(th, 0, 4*addr.KiB, false)
		if got := e.host.DPAMTRef(l.PFN); got != 511 {
			t.Errorf("after DEMOTE and one removal: refcount %d, want 511", got)
		}
		// The guest range's pair came with DEMOTE; a PAMT.ADD is only
		// allowed for the new S-EPT page's range.
		if got := e.c.Calls()["TDH.PHYMEM.PAMT.ADD"] - adds; got > 1 {
			t.Errorf("%d PAMT.ADDs for one split, want at most 1", got)
		}
		e.mustSetAttrs(th, 0, 2*addr.MiB, false)
		if got := e.host.DPAMTRef(l.PFN); got != 0 {
			t.Errorf("every 4K page removed: refcount %d, want 0", got)
		}
		if e.c.Calls()["TDH.PHYMEM.PAMT.REMOVE"] == removes {
			t.Errorf("the last put did not remove the pair")
		}
		e.dpamtAgrees()
		e.teardown(th)
	})
}

// A failed Dynamic PAMT put is a loud warning (patch 18): the WARN is
// recorded, the refcount and the pair stay (leaked on purpose).
func TestFailedPAMTPutWarns(t *testing.T) {
	o := hugeOpts(1)
	o.record = true
	e := runTD(t, o, func(th *sched.Thread, e *env) {
		e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error { return acceptTagged(vt, v, 0, 2*addr.MiB) })
		l, _ := e.leafAt(0)
		e.mustSetAttrs(th, 0, 4*addr.KiB, false)
		e.mod.SetInjector(func(leaf tdxmodule.Leaf, in tdxmodule.Regs) (tdxmodule.Status, bool) {
			return tdxmodule.OperandInvalid, leaf == tdxmodule.LeafPhymemPAMTRemove
		})
		e.mustSetAttrs(th, 0, 2*addr.MiB, false)
		e.mod.SetInjector(nil)
		if got := e.host.DPAMTRef(l.PFN); got != 1 {
			t.Errorf("after a failed put: refcount %d, want 1 (kept)", got)
		}
		e.teardown(th)
	})
	warned := false
	for _, ev := range e.rec.Events() {
		if ev.Kind == event.KindTDX && ev.Name == "WARN" {
			warned = true
		}
	}
	if !warned {
		t.Errorf("a failed tdx_pamt_put raised no WARN")
	}
	if b, _ := e.m.VM.Bugged(); b {
		t.Errorf("a failed put must not kill the VM")
	}
}

// max_order_from: with GPA 0 bound at guest_memfd offset 1 MiB, GFNs and
// indexes disagree in 2M alignment. guest_memfd's mapping order says 4K;
// the folio's order (the NAK'd design) says 2M, and KVM then maps the
// whole folio at GPA 0: pages of other indexes, the hazard the TDX huge-page series v3 names.
func TestMaxOrderFrom(t *testing.T) {
	for _, from := range []mmu.MaxOrderFrom{mmu.MaxOrderFromGmem, mmu.MaxOrderFromFolio} {
		t.Run(from.String(), func(t *testing.T) {
			o := hugeOpts(1)
			o.mmu.MaxOrderFrom = from
			o.vmm.GmemOffset = addr.MiB
			runClean(t, o, func(th *sched.Thread, e *env) {
				e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error {
					_, err := acceptAt(vt, v, 0, addr.Level2M)
					return err
				})
				l, _ := e.leafAt(0)
				want, _ := e.m.Gmem.PFNAt(addr.MiB >> addr.PageShift)
				switch from {
				case mmu.MaxOrderFromGmem:
					if l.Level != addr.Level4K || l.PFN != want {
						t.Errorf("gmem order: leaf %+v, want 4K at %s", l, want)
					}
				case mmu.MaxOrderFromFolio:
					if l.Level != addr.Level2M || l.PFN == want {
						t.Errorf("folio order: leaf %+v; the rejected design maps the folio 2M at %s, not guest_memfd's page %s", l, l.PFN, want)
					}
				}
				e.teardown(th)
			})
		})
	}
}

// split_order, with an in-place guest_memfd converting a 4K page inside a
// 2M mapping: sept_first splits the S-EPT mapping before the folio;
// folio_first splits the folio while the S-EPT still maps it 2M.
func TestSplitOrder(t *testing.T) {
	for _, folioFirst := range []bool{false, true} {
		name := map[bool]string{false: "sept_first", true: "folio_first"}[folioFirst]
		t.Run(name, func(t *testing.T) {
			o := hugeOpts(1)
			o.record = true
			o.vmm.InPlace = true
			o.splitFolioFirst = folioFirst
			e := runTD(t, o, func(th *sched.Thread, e *env) {
				e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error {
					if err := acceptTagged(vt, v, 0, 2*addr.MiB); err != nil {
						return err
					}
					shared := uint64(e.m.VM.SharedBit().GPA())
					if st, _, err := v.MapGPA(vt, 4*addr.KiB|shared, 4*addr.KiB); err != nil || st != tdx.TDVMCallSuccess {
						t.Errorf("MapGPA: %#x, %v", st, err)
					}
					return nil
				})
				mmuSplit, folioSplit := -1, -1
				for i, ev := range e.rec.Events() {
					switch {
					case ev.Kind == event.KindMMU && ev.Name == "split" && mmuSplit < 0:
						mmuSplit = i
					case ev.Kind == event.KindGmem && ev.Name == "split_folio" && folioSplit < 0:
						folioSplit = i
					}
				}
				if mmuSplit < 0 || folioSplit < 0 {
					t.Fatalf("split events: S-EPT %d, folio %d", mmuSplit, folioSplit)
				}
				if (mmuSplit < folioSplit) == folioFirst {
					t.Errorf("%s: S-EPT split at event %d, folio split at %d", name, mmuSplit, folioSplit)
				}
				e.wantLevel(0, addr.Level4K)
				e.agreeLeaves()
				e.teardown(th)
			})
			// folio_first splits the folio while the S-EPT maps it 2M:
			// the TDX module's split guard reports it.
			split := e.violations(hostmem.RuleSplitMappedHuge)[hostmem.RuleSplitMappedHuge]
			if (split > 0) != folioFirst {
				t.Errorf("%s: %d split-mapped-huge violations", name, split)
			}
			e.clean()
		})
	}
}

// pin_private_pages (the v6.16 design "KVM: TDX: Drop superfluous page pinning in S-EPT management" removed): every 4K page of
// a private leaf holds one more folio reference while it is in the S-EPT;
// a demote keeps them, a REMOVE drops its pages' ones, and teardown leaves
// nothing pinned or leaked.
func TestPinPrivatePages(t *testing.T) {
	o := hugeOpts(3)
	o.pin = true
	runClean(t, o, func(th *sched.Thread, e *env) {
		e.onVCPU0(th, func(vt *sched.Thread, v *tdx.VCPU) error {
			if st, err := acceptAt(vt, v, 0, addr.Level2M); err != nil || st != tdxmodule.Success {
				t.Errorf("2M accept at 0: %v, %v", st, err)
			}
			return nil
		})
		l, ok := e.leafAt(0)
		if !ok || l.Level != addr.Level2M {
			t.Fatalf("no 2M leaf at 0: %+v", l)
		}
		if f, _ := e.host.Mem.FolioOf(l.PFN); f.Ref != 1+512 {
			t.Errorf("folio refcount %d after a pinned 2M AUG, want 513 (guest_memfd's + 512 pins)", f.Ref)
		}
		// Convert one 4K page to shared: the leaf is demoted (pins
		// stay), the page is removed (its pin goes).
		e.mustSetAttrs(th, 0, 4*addr.KiB, false)
		if f, _ := e.host.Mem.FolioOf(l.PFN); f.Ref != 1+511 {
			t.Errorf("folio refcount %d after removing one 4K page, want 512", f.Ref)
		}
		if got := e.td.Stats().PagesPinned; got != 511 {
			t.Errorf("%d pages pinned, want 511", got)
		}
		e.agreeLeaves()
		e.teardown(th)
		if got := e.td.Stats().PagesPinned; got != 0 {
			t.Errorf("%d pages still pinned after teardown", got)
		}
	})
}
