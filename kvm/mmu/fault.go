package mmu

import (
	"errors"
	"fmt"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/internal/mutation"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/sched"
)

// Result is a fault's outcome (enum RET_PF_*).
type Result uint8

// Fault outcomes.
const (
	RetFixed    Result = iota + 1 // RET_PF_FIXED: a mapping was installed
	RetSpurious                   // RET_PF_SPURIOUS: it was already there
	RetRetry                      // RET_PF_RETRY: raced; re-enter and fault again
)

func (r Result) String() string {
	switch r {
	case RetFixed:
		return "RET_PF_FIXED"
	case RetSpurious:
		return "RET_PF_SPURIOUS"
	case RetRetry:
		return "RET_PF_RETRY"
	}
	return fmt.Sprintf("Result(%d)", uint8(r))
}

// PageFault handles a guest access to gpa that the EPT could not
// translate. private is fault->is_private (for a TD: the shared bit is
// clear); maxLevel is fault->max_level, lowered by the arch (TDX: the
// guest's accept level carried in the EPT violation). Kernel:
// kvm_tdp_page_fault(): top up the caches, resolve the PFN
// (kvm_mmu_faultin_pfn, through guest_memfd for private memory), pick the
// mapping level (kvm_mmu_hugepage_adjust), then under mmu_lock for read
// give up if an invalidation raced (RET_PF_RETRY) and otherwise walk and
// install with kvm_tdp_mmu_map(). Errors: EIO on a dead VM, ENOMEM from a
// top-up, and *kvm.MemoryFault exits to userspace.
func (v *VCPU) PageFault(t *sched.Thread, gpa addr.GPA, private bool, maxLevel addr.Level) (Result, error) {
	m := v.m
	m.c.faults.Add(1)
	if err := v.kv.CheckRequests(); err != nil {
		return 0, err
	}
	if err := v.TopUp(t); err != nil {
		return 0, err
	}
	if err := v.Load(t); err != nil {
		return 0, err
	}
	gfn := gpa.GFN() &^ m.vm.SharedBit()
	f, err := v.kv.FaultInPFN(t, gfn, private)
	if errors.Is(err, kvm.ErrRetry) {
		m.c.retries.Add(1)
		return RetRetry, nil
	}
	if err != nil {
		return 0, err
	}
	if !f.HasPFN {
		return 0, &kvm.MemoryFault{GPA: uint64(gpa), Size: addr.PageSize, Private: private, Errno: errno.EFAULT,
			Why: "shared memory without a userspace mapping (no UserMemory)"}
	}
	defer m.mem.Put(t, f.PFN) // kvm_release_faultin_page: mapping holds no reference
	root := DirectRoot
	if private && m.Mirrored() {
		root = MirrorRoot
	}
	m.lock.RLock(t)
	// kvm_mmu_hugepage_adjust() runs in kvm_tdp_mmu_map(), under
	// mmu_lock: the level is chosen after any writer that changed the
	// lpage info (a guest-inhibit set with a split of the accept level,
	// patch 13) is done, so no huge leaf is installed over it.
	goal := addr.Level4K
	v.couldMap = addr.Level4K
	if root == MirrorRoot {
		goal = m.privateLevel(f, maxLevel)
		v.couldMap = m.levelBeforeAcceptRule(f)
	}
	res := RetRetry
	if mutation.On(mutation.SkipInvalidateRetry) || !m.vm.InvalidateRetry(f.Seq, gfn) {
		if mutation.On(mutation.EarlyMMUUnlock) {
			m.lock.RUnlock(t)
			res, err = m.tdpMap(t, v, root, m.rootGFN(root, gfn), goal, f.PFN)
			m.count(res)
			return res, err
		}
		res, err = m.tdpMap(t, v, root, m.rootGFN(root, gfn), goal, f.PFN)
	}
	m.lock.RUnlock(t)
	m.count(res)
	return res, err
}

// privateLevel is kvm_mmu_hugepage_adjust() -> kvm_mmu_max_mapping_level()
// for a private fault: the smallest of the fault's max level, the
// hugepages policy, the arch's private_max_mapping_level, the max order
// (guest_memfd's kvm_gmem_mapping_order(), or the folio's order under the
// rejected max_order_from=folio design), and then the highest level whose
// lpage_info allows it (slot alignment, mixed attributes, guest inhibit).
// Shared memory is mapped at 4K: the VMM's memory is 4K pages.
func (m *MMU) privateLevel(f kvm.Fault, maxLevel addr.Level) addr.Level {
	order := f.MappingOrder
	if m.cfg.MaxOrderFrom == MaxOrderFromFolio {
		order = f.MaxOrder
	}
	level := min(maxLevel, m.cfg.HugePages.MaxLevel(), m.ext.PrivateMaxLevel(), levelForOrder(order))
	for ; level > addr.Level4K; level-- {
		if f.Slot.HugePageAllowed(level, f.GFN) {
			break
		}
	}
	return level
}

func (m *MMU) count(r Result) {
	switch r {
	case RetFixed:
		m.c.fixed.Add(1)
	case RetSpurious:
		m.c.spurious.Add(1)
	case RetRetry:
		m.c.retries.Add(1)
	}
}

// MapPrivatePFN maps pfn, which the caller already holds, at private gfn
// in the mirror root, for the TD build (KVM_TDX_INIT_MEM_REGION): no page
// fault is synthesized and guest_memfd is not asked again. The
// caller holds slots_lock and guest_memfd's invalidate lock, so nothing can
// zap the GFN meanwhile. Kernel: kvm_tdp_mmu_map_private_pfn() (v6.19):
// loop under mmu_lock for read while RET_PF_RETRY; VM dead -> EIO; any
// result but RET_PF_FIXED -> EIO.
func (v *VCPU) MapPrivatePFN(t *sched.Thread, gfn addr.GFN, pfn addr.PFN) error {
	const op = "kvm_tdp_mmu_map_private_pfn"
	m := v.m
	if !m.Mirrored() {
		return errno.New(op, errno.EINVAL, "the VM has no mirror root")
	}
	for {
		if err := v.kv.CheckRequests(); err != nil {
			return err
		}
		if err := v.TopUp(t); err != nil {
			return err
		}
		if err := v.Load(t); err != nil {
			return err
		}
		m.lock.RLock(t)
		res, err := m.tdpMap(t, v, MirrorRoot, gfn, addr.Level4K, pfn)
		m.lock.RUnlock(t)
		m.count(res)
		switch {
		case err != nil:
			return err
		case res == RetRetry:
			t.Spin()
			continue
		case res != RetFixed:
			return errno.Newf(op, errno.EIO, "%s: %s already mapped", res, gfn)
		}
		return nil
	}
}

// tdpMap is kvm_tdp_mmu_map(): walk from the root to goal, linking new page
// tables where entries are missing, then install the leaf. Every change is
// an atomic compare-and-exchange; a frozen entry, a lost race or a busy
// external page table gives RET_PF_RETRY. mmu_lock is held for read.
func (m *MMU) tdpMap(t *sched.Thread, v *VCPU, root Root, gfn addr.GFN, goal addr.Level, pfn addr.PFN) (Result, error) {
	for e := range path(m.root(root), gfn) {
		p, i, old, level := e.p, e.i, e.old, e.level()
		if old.Frozen() {
			return RetRetry, nil
		}
		if level == goal {
			if !old.Present() || old.Leaf(level) {
				return m.mapTarget(t, v, p, i, pfn, old)
			}
			// A page table where a huge leaf is wanted. The direct root
			// would replace it (huge page adjustment); the mirror root
			// never merges (TDX huge-page series patch 06: PROMOTE is
			// not used), so the fault maps below it, at the smaller
			// level.
			goal = level - 1
			continue
		}
		if old.Present() {
			if old.Leaf(level) {
				// A huge leaf above the goal: mainline never maps private
				// memory huge, and splitting it here would need write
				// mmu_lock (tdp_mmu.c: KVM_BUG_ON on a mirror root).
				if root == MirrorRoot {
					return 0, m.vm.Bug(t, fmt.Sprintf("fault at %s would split a present huge mirror SPTE at level %s", gfn, level))
				}
				return RetRetry, nil
			}
			continue
		}
		base := gfn &^ addr.GFN(level.Pages()-1)
		child, err := m.allocPage(t, v, root, level-1, base)
		if err != nil {
			return 0, err
		}
		if err := m.link(t, v, p, i, old, child); err != nil {
			m.freePage(t, child)
			if isBusy(err) {
				return RetRetry, nil
			}
			return 0, err
		}
		// path steps into child next.
	}
	return RetRetry, nil // no root, or no table below a table entry
}

// link is tdp_mmu_link_sp(): publish child below entry i of p (for a
// mirror table, TDH.MEM.SEPT.ADD adds its S-EPT page first), through
// changeSPTE.
func (m *MMU) link(t *sched.Thread, v *VCPU, p *page, i int, old SPTE, child *page) error {
	return m.changeSPTE(t, v, spteChange{p: p, i: i, old: old, new: makeNonLeaf(child.pfn), child: child})
}

// mapTarget is tdp_mmu_map_handle_target_level(): a present leaf is
// spurious; otherwise install the leaf through changeSPTE (for a mirror
// entry that is set_external_spte_present(): freeze, map in the S-EPT,
// then publish, or put the old value back on failure). A huge leaf maps
// the PFN rounded down to the level, as kvm_mmu_hugepage_adjust() does
// (fault->pfn &= ~mask); guest_memfd's mapping order guarantees that GFN
// and PFN agree in alignment, the folio's order does not.
func (m *MMU) mapTarget(t *sched.Thread, v *VCPU, p *page, i int, pfn addr.PFN, old SPTE) (Result, error) {
	level := p.level
	if old.Present() {
		return RetSpurious, nil
	}
	pfn &^= addr.PFN(level.Pages() - 1)
	err := m.changeSPTE(t, v, spteChange{p: p, i: i, old: old, new: makeLeaf(pfn, level)})
	switch {
	case isBusy(err):
		return RetRetry, nil
	case err != nil:
		return 0, err
	}
	return RetFixed, nil
}
