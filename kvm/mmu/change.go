package mmu

import (
	"fmt"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/sched"
)

// spteChange is one SPTE transition: entry i of table p goes from old to
// new. child is the table a new non-leaf SPTE points at (the kernel finds
// it from the SPTE with spte_to_child_sp(); the model keeps the pointer
// beside the entry).
type spteChange struct {
	p        *page
	i        int
	old, new SPTE
	child    *page
}

// errLostRace is a compare-and-exchange that found another value: the
// caller retries the fault (RET_PF_RETRY).
var errLostRace = errno.New("tdp_mmu_set_spte_atomic", errno.EBUSY, "lost the race for the entry")

// changeSPTE is the one place an entry of a live page table changes; the
// transition, old to new, says what it is:
//
//   - non-present to a leaf (map) or to a table (link), with mmu_lock
//     held for read: setSPTEAtomic, which for a mirror entry freezes it,
//     calls set_external_spte or link_external_spt, and then publishes
//     new or puts old back. A lost race or a busy hook returns EBUSY;
//     any other hook error (the VM is dead) is returned as is. Either
//     way the entry holds old again.
//   - a huge leaf to a table (split), mmu_lock held for write: a mirror
//     leaf is demoted in the S-EPT first (split_external_spte) and only
//     then replaced; on a hook error nothing changed.
//   - present to non-present or FROZEN_SPTE (zap, teardown), mmu_lock
//     held for write: the entry is written, and a mirror leaf is then
//     removed from the S-EPT (remove_external_spte; its failure is the
//     hook's KVM_BUG_ON, so it is not returned).
//
// Every change that happened then goes through handleChangedSPTE.
// Kernel: tdp_mmu_set_spte_atomic() -> set_external_spte_present(),
// tdp_mmu_set_spte() -> remove_external_spte() / split_external_spt(),
// both ending in handle_changed_spte().
func (m *MMU) changeSPTE(t *sched.Thread, v *VCPU, c spteChange) error {
	p, i := c.p, c.i
	switch {
	case !c.old.Present():
		if err := m.setSPTEAtomic(t, v, c); err != nil {
			return err
		}
	case c.new.Present():
		if p.root == MirrorRoot {
			if err := m.ext.SplitExternalSPTE(t, p.entryGFN(i), p.level, c.old.PFN(), c.child.external); err != nil {
				return err
			}
		}
		p.children[i].Store(c.child)
		p.store(i, c.new)
	default:
		p.store(i, c.new)
	}
	m.handleChangedSPTE(t, c)
	if p.root == MirrorRoot && c.old.Present() && !c.new.Present() && c.old.Leaf(p.level) {
		_ = m.ext.RemoveExternalSPTE(t, p.entryGFN(i), p.level, c.old.PFN())
	}
	return nil
}

// setSPTEAtomic makes a non-present entry present with mmu_lock held for
// read. A direct leaf is one compare-and-exchange. A table, and any mirror
// entry, is frozen first: the child pointer is published and, for a
// mirror entry, the S-EPT changed while racing walkers see FROZEN_SPTE
// and back off. (The kernel's direct-root link is a single cmpxchg of an
// SPTE that carries the child's PFN; the model freezes there too, because
// its child pointer lives beside the SPTE.) Kernel:
// tdp_mmu_set_spte_atomic() (lockdep_assert_held_read(&kvm->mmu_lock)),
// set_external_spte_present().
func (m *MMU) setSPTEAtomic(t *sched.Thread, v *VCPU, c spteChange) error {
	p, i := c.p, c.i
	m.assertHeld(t, "tdp_mmu_set_spte_atomic")
	if c.child == nil && p.root != MirrorRoot {
		if !p.cas(i, c.old, c.new) {
			return errLostRace
		}
		return nil
	}
	if !p.cas(i, c.old, FrozenSPTE) {
		return errLostRace
	}
	if c.child != nil {
		p.children[i].Store(c.child)
	}
	if p.root == MirrorRoot {
		var err error
		if c.child != nil {
			err = m.ext.LinkExternalSPT(t, v, p.entryGFN(i), p.level, c.child.external)
		} else {
			err = m.ext.SetExternalSPTE(t, v, p.entryGFN(i), p.level, c.new.PFN())
		}
		if err != nil {
			if c.child != nil {
				p.children[i].Store(nil)
			}
			p.store(i, c.old)
			return err
		}
	}
	p.store(i, c.new)
	return nil
}

// handleChangedSPTE is the bookkeeping of a change that happened: the
// per-root leaf counts, the MMU's events, and, when a table entry is
// zapped, the removal of the table below it (handleRemovedPT). Kernel:
// handle_changed_spte() (kvm_update_page_stats, trace_kvm_tdp_mmu_spte_changed,
// handle_removed_pt), with the split's accounting of
// tdp_mmu_split_huge_page().
func (m *MMU) handleChangedSPTE(t *sched.Thread, c spteChange) {
	p, i := c.p, c.i
	level, gfn := p.level, p.entryGFN(i)
	wasLeaf := c.old.Present() && c.old.Leaf(level)
	switch {
	case !c.old.Present() && c.new.Leaf(level):
		m.countMap(p.root, level, 1)
		m.emit(t, "map", gfn, level, c.new.PFN(), p.root, "")
		if p.root == MirrorRoot && level > addr.Level4K {
			m.checkHugeAttrs(t, gfn, level)
		}
	case !c.old.Present():
		m.emit(t, "link", gfn, level, c.child.pfn, p.root, "")
	case wasLeaf && c.new.Present():
		m.c.tables[p.root].Add(1)
		m.countMap(p.root, level, -1)
		m.countMap(p.root, level-1, 512)
		m.c.splits[level].Add(1)
		m.emit(t, "split", gfn, level, c.old.PFN(), p.root, fmt.Sprintf("into %d leaves at %s", 512, level-1))
	case wasLeaf:
		m.countMap(p.root, level, -1)
		m.c.zapped.Add(1)
		m.emit(t, "zap", gfn, level, c.old.PFN(), p.root, "")
	default:
		child := p.child(i)
		p.children[i].Store(nil)
		if child != nil {
			m.handleRemovedPT(t, child)
		}
	}
}

// checkHugeAttrs reports a huge private leaf just installed over GFNs
// whose memory attributes are not all private (RuleHugeOverMixed), read
// from the attributes themselves rather than from the lpage_info flags
// the fault consulted. The per-step walk (check's mapping_level_allowed)
// sees such a leaf only if it is still there at the step's end; this
// sees it when it is made. An in-place guest_memfd keeps its own
// shared/private state, which the walk reads; it is not checked here.
func (m *MMU) checkHugeAttrs(t *sched.Thread, gfn addr.GFN, level addr.Level) {
	s := m.vm.SlotAt(gfn)
	if s == nil || s.GmemFile() == nil || s.GmemFile().InPlace() {
		return
	}
	if n := addr.GFN(level.Pages()); !m.vm.RangeIsPrivate(gfn, gfn+n) {
		ev := event.Event{Kind: event.KindViolation, Name: RuleHugeOverMixed,
			Detail: fmt.Sprintf("%s leaf at %s spans GFNs whose attributes are not all private", level, gfn.GPA())}
		t.Stamp(&ev)
		m.sink.Emit(ev)
	}
}
