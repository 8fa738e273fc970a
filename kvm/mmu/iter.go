package mmu

import (
	"iter"

	"github.com/tdxsim/tdxsim/addr"
)

// allGFNs ends a walk over a whole root.
const allGFNs = ^addr.GFN(0)

// entry is one present SPTE a walk visits: the table, the index and the
// value read. Kernel: struct tdp_iter (sptep, old_spte, gfn, level).
type entry struct {
	p   *page
	i   int
	old SPTE
}

func (e entry) gfn() addr.GFN     { return e.p.entryGFN(e.i) }
func (e entry) level() addr.Level { return e.p.level }

func (e entry) leaf() Leaf { return Leaf{GFN: e.gfn(), Level: e.level(), PFN: e.old.PFN()} }

// indexes returns the first and last entry of p that map a GFN in
// [start, end); last < first when none does.
func (p *page) indexes(start, end addr.GFN) (first, last int) {
	if start >= end {
		return 1, 0
	}
	span := addr.GFN(p.level.Pages())
	first, last = 0, 511
	if start > p.gfn {
		if start-p.gfn >= 512*span {
			return 1, 0
		}
		first = int((start - p.gfn) / span)
	}
	if end-1 < p.gfn {
		return 1, 0
	}
	if top := p.gfn + 512*span - 1; end-1 < top {
		last = int((end - 1 - p.gfn) / span)
	}
	return first, last
}

// present yields the present entries of the one table p, in index order,
// with the value read just before each is yielded. It is the loop over a
// table's 512 entries of handle_removed_pt() and tdp_mmu_zap_root()'s top
// level.
func (p *page) present() iter.Seq[entry] {
	return func(yield func(entry) bool) {
		for i := range 512 {
			if old := p.load(i); old.Present() && !yield(entry{p, i, old}) {
				return
			}
		}
	}
}

// path yields the entries on the way from root down to gfn, one a level,
// present or not, each with the value read just before it is yielded.
// After the body returns, path steps into the entry's child table (the
// body may just have linked it) and ends where there is none. Kernel:
// tdp_mmu_for_each_pte(iter, kvm, root, gfn, gfn + 1) in
// kvm_tdp_mmu_map().
func path(root *page, gfn addr.GFN) iter.Seq[entry] {
	return func(yield func(entry) bool) {
		for p := root; p != nil; {
			i := spteIndex(gfn, p.level)
			if !yield(entry{p, i, p.load(i)}) {
				return
			}
			p = p.child(i)
		}
	}
}

// walk yields every present entry under root that maps a GFN in
// [start, end), parents before their children, in GFN order; a nil root
// yields nothing. The body may change the entry it is given (zap a leaf);
// a table entry's child is read after the body returns. Kernel:
// for_each_tdp_pte().
func walk(root *page, start, end addr.GFN) iter.Seq[entry] {
	return func(yield func(entry) bool) {
		if root != nil {
			walkTable(root, start, end, false, yield)
		}
	}
}

// leaves is walk restricted to leaf entries. Kernel:
// tdp_root_for_each_leaf_pte().
func leaves(root *page, start, end addr.GFN) iter.Seq[entry] {
	return func(yield func(entry) bool) {
		if root != nil {
			walkTable(root, start, end, true, yield)
		}
	}
}

func walkTable(p *page, start, end addr.GFN, leavesOnly bool, yield func(entry) bool) bool {
	first, last := p.indexes(start, end)
	for i := first; i <= last; i++ {
		old := p.load(i)
		if !old.Present() {
			continue
		}
		leaf := old.Leaf(p.level)
		if (leaf || !leavesOnly) && !yield(entry{p, i, old}) {
			return false
		}
		if leaf {
			continue
		}
		if c := p.child(i); c != nil && !walkTable(c, start, end, leavesOnly, yield) {
			return false
		}
	}
	return true
}
