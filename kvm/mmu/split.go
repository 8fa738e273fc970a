package mmu

import (
	"errors"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/sched"
)

// splitsPerRange is the most splits one range needs: each of its two
// edges may cut a 1G leaf (split to 2M) and then a 2M leaf (split to 4K).
const splitsPerRange = 4

// TopUpSplitCache fills the per-VM split cache (KVM's page-table pages,
// the S-EPT pages, and the arch's own pages for a split) for one range's
// splits, before mmu_lock is taken. Kernel: the per-VM external cache for
// splitting (TDX huge-page series patches 19-20), topped up outside
// mmu_lock and charged to the VM. Errors: ENOMEM.
func (m *MMU) TopUpSplitCache(t *sched.Thread) error {
	if !m.Mirrored() {
		return nil
	}
	if err := m.splitPT.TopUpTo(t, splitsPerRange); err != nil {
		return err
	}
	if err := m.splitExt.TopUpTo(t, splitsPerRange); err != nil {
		return err
	}
	return m.ext.TopUpSplitCache(t, splitsPerRange)
}

// SplitCrossBoundary splits the private huge leaves that straddle r's
// edges, so that the range can then be zapped without touching the GFNs
// outside it; leaves inside the range and leaves that merely touch an edge
// stay as they are. Kernel: kvm_split_cross_boundary_leafs() (patch 11),
// with mmu_lock held for write. It returns kvm.ErrSplitCacheLow when the
// split cache ran out (what was split stays split; the caller tops up and
// calls again), or the hook's error (the VM is dead).
func (m *MMU) SplitCrossBoundary(t *sched.Thread, r gmem.Range) error {
	m.assertWrite(t, "kvm_split_cross_boundary_leafs")
	if !m.Mirrored() || r.Filter&gmem.FilterPrivate == 0 || r.Start >= r.End {
		return nil
	}
	for _, edge := range []addr.GFN{r.Start, r.End} {
		for {
			p, i, ok := m.hugeLeafAt(edge)
			if !ok || p.entryGFN(i) == edge {
				break
			}
			if err := m.splitLeaf(t, p, i); err != nil {
				return err
			}
		}
	}
	return nil
}

// hugeLeafAt finds the present huge mirror leaf covering gfn.
func (m *MMU) hugeLeafAt(gfn addr.GFN) (*page, int, bool) {
	for e := range leaves(m.root(MirrorRoot), gfn, gfn+1) {
		return e.p, e.i, e.level() > addr.Level4K
	}
	return nil, 0, false
}

// errSharedSplit is the refusal of patch 09: a mirror leaf is never split
// with mmu_lock held for read, because a DEMOTE that fails after BLOCK
// cannot be undone.
var errSharedSplit = errors.New("splitting a private huge page needs mmu_lock held for write")

// splitLeaf is tdp_mmu_split_huge_page() for the huge mirror leaf i of p,
// with mmu_lock held for write (patches 07-10): a child page table (KVM's
// page and its S-EPT page, from the per-VM split cache) is filled with 512
// leaves one level down over the same memory; then changeSPTE demotes the
// S-EPT (split_external_spte: BLOCK, TRACK, TDH.MEM.PAGE.DEMOTE) and only
// after that points the parent entry at the child. On any failure the
// mirror entry is unchanged and the pages go back to the cache.
func (m *MMU) splitLeaf(t *sched.Thread, p *page, i int) error {
	const op = "tdp_mmu_split_huge_page"
	old := p.load(i)
	level := p.level
	gfn := p.entryGFN(i)
	if p.root != MirrorRoot || !old.Present() || !old.Leaf(level) || level == addr.Level4K {
		return errno.Newf(op, errno.EINVAL, "%s at level %s is not a huge mirror leaf", gfn, level)
	}
	if !m.lock.HeldWrite(t) {
		return errno.Newf(op, errno.EBUSY, "%s: %v", gfn, errSharedSplit)
	}
	if m.splitPT.Len() == 0 || m.splitExt.Len() == 0 {
		return kvm.ErrSplitCacheLow
	}
	ptPFN, _ := m.splitPT.Take(t)
	extPFN, _ := m.splitExt.Take(t)
	child := newPage(MirrorRoot, level-1, gfn, ptPFN)
	child.external, child.hasExt = extPFN, true
	// The child is not reachable yet, so its entries are plain writes,
	// as tdp_mmu_split_huge_page() fills sp->spt before linking it.
	base, step := old.PFN(), addr.PFN((level - 1).Pages())
	for k := range 512 {
		child.store(k, makeLeaf(base+addr.PFN(k)*step, level-1))
	}
	if err := m.changeSPTE(t, nil, spteChange{p: p, i: i, old: old, new: makeNonLeaf(ptPFN), child: child}); err != nil {
		m.splitPT.Return(ptPFN)
		m.splitExt.Return(extPFN)
		return err
	}
	return nil
}
