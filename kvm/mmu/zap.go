package mmu

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/sched"
)

// assertWrite is lockdep_assert_held_write(&kvm->mmu_lock): a zap without
// it is a model bug, reported as a violation.
func (m *MMU) assertWrite(t *sched.Thread, what string) {
	if !m.lock.HeldWrite(t) {
		m.lockNotHeld(t, what+" without mmu_lock held for write")
	}
}

// assertHeld is lockdep_assert_held(&kvm->mmu_lock), for read or write:
// an atomic SPTE change without it is a model bug, reported as a
// violation (tdp_mmu_set_spte_atomic() asserts the lock held for read).
func (m *MMU) assertHeld(t *sched.Thread, what string) {
	if !m.lock.Held(t) {
		m.lockNotHeld(t, what+" without mmu_lock held")
	}
}

// lockNotHeld reports RuleLockNotHeld with detail.
func (m *MMU) lockNotHeld(t *sched.Thread, detail string) {
	ev := event.Event{Kind: event.KindViolation, Name: RuleLockNotHeld, Detail: detail}
	t.Stamp(&ev)
	m.sink.Emit(ev)
}

// UnmapGFNRange zaps the leaf SPTEs of r in the roots its filter selects.
// Kernel: kvm_unmap_gfn_range -> kvm_tdp_mmu_unmap_gfn_range(): for a TD,
// PRIVATE selects the mirror root and SHARED the direct root (where shared
// GPAs carry the shared bit); other VMs have only the direct root. Page
// tables stay. mmu_lock is held for write.
func (m *MMU) UnmapGFNRange(t *sched.Thread, r gmem.Range) bool {
	m.assertWrite(t, "kvm_tdp_mmu_unmap_gfn_range")
	flush := false
	if m.Mirrored() {
		if r.Filter&gmem.FilterPrivate != 0 {
			flush = m.zapLeafs(t, MirrorRoot, r.Start, r.End) || flush
		}
		if r.Filter&gmem.FilterShared != 0 {
			flush = m.zapLeafs(t, DirectRoot, r.Start, r.End) || flush
		}
		return flush
	}
	return m.zapLeafs(t, DirectRoot, r.Start, r.End)
}

// FlushShadowMemslot zaps every leaf the slot mapped, private and shared,
// leaving page tables in place. Kernel: kvm_arch_flush_shadow_memslot ->
// kvm_mmu_zap_memslot() with PRIVATE|SHARED: the "zap all roots on a
// memslot change" quirk applies to default VMs only, and a TD's mirror root
// can never be fast-zapped.
func (m *MMU) FlushShadowMemslot(t *sched.Thread, s *kvm.Memslot) {
	m.lock.Lock(t)
	defer m.lock.Unlock(t)
	flush := false
	if m.Mirrored() {
		flush = m.zapLeafs(t, MirrorRoot, s.BaseGFN(), s.EndGFN())
	}
	flush = m.zapLeafs(t, DirectRoot, s.BaseGFN(), s.EndGFN()) || flush
	if flush {
		m.FlushRemoteTLBs(t)
	}
}

// FlushRemoteTLBs is kvm_flush_remote_tlbs(); for a TD, tdx_flush_tlb_all
// is a global INVEPT, the private TLBs having been handled by TDH.MEM.TRACK.
func (m *MMU) FlushRemoteTLBs(t *sched.Thread) { m.c.flushes.Add(1) }

// ZapAll is the MMU-notifier release (kvm_arch_flush_shadow_all ->
// kvm_tdp_mmu_zap_all): the direct root is zapped whole, page tables
// included; "mirror roots don't need handling in response to the mmu
// notifier", so private memory stays.
func (m *MMU) ZapAll(t *sched.Thread) {
	m.lock.Lock(t)
	defer m.lock.Unlock(t)
	if r := m.root(DirectRoot); r != nil {
		m.zapRoot(t, r)
	}
}

// ZapGFNRange is kvm_zap_gfn_range() for a memory-type change: it zaps
// shared leaves only. Private memory is always write-back, so KVM never
// zaps it for a memory type; Config.ZapPrivateOnNotifier makes it
// do so, as the rejected design would.
func (m *MMU) ZapGFNRange(t *sched.Thread, start, end addr.GFN) {
	m.lock.Lock(t)
	defer m.lock.Unlock(t)
	flush := m.zapLeafs(t, DirectRoot, start, end)
	if m.Mirrored() && m.cfg.ZapPrivateOnNotifier {
		flush = m.zapLeafs(t, MirrorRoot, start, end) || flush
	}
	if flush {
		m.FlushRemoteTLBs(t)
	}
}

// zapLeafs is tdp_mmu_zap_leafs() over one root for memslot GFNs
// [start, end): every present leaf becomes non-present with the
// non-atomic tdp_mmu_set_spte(), and a mirror leaf is then removed from the
// S-EPT (remove_external_spte; its failure is the hook's KVM_BUG_ON, and
// zapping goes on). It reports whether anything was zapped.
func (m *MMU) zapLeafs(t *sched.Thread, r Root, start, end addr.GFN) bool {
	if start >= end {
		return false
	}
	zapped := false
	for e := range leaves(m.root(r), m.rootGFN(r, start), m.rootGFN(r, end-1)+1) {
		m.zapSPTE(t, e.p, e.i, e.old)
		zapped = true
	}
	return zapped
}

// zapSPTE makes one present entry non-present under the write lock through
// changeSPTE, which for a mirror leaf also removes it from the S-EPT and
// for a table removes the table below (handleRemovedPT).
func (m *MMU) zapSPTE(t *sched.Thread, p *page, i int, old SPTE) {
	_ = m.changeSPTE(t, nil, spteChange{p: p, i: i, old: old, new: NonPresent})
}

// zapRoot is tdp_mmu_zap_root(): every entry of the root goes, page tables
// with their leaves (handle_removed_pt), under mmu_lock for write.
func (m *MMU) zapRoot(t *sched.Thread, r *page) {
	for e := range r.present() {
		m.zapSPTE(t, r, e.i, e.old)
	}
}

// handleRemovedPT is handle_removed_pt() with exclusive mmu_lock, for a
// table already unlinked from its parent: every entry is frozen through
// changeSPTE, so leaves are removed (from the S-EPT too, for a mirror
// table) and child tables recursively; then a mirror table's S-EPT page
// is reclaimed with free_external_spt (a failure leaks it, as the kernel
// does) and KVM's pages are freed.
func (m *MMU) handleRemovedPT(t *sched.Thread, p *page) {
	for e := range p.present() {
		_ = m.changeSPTE(t, nil, spteChange{p: p, i: e.i, old: e.old, new: FrozenSPTE})
	}
	if p.root == MirrorRoot && p.hasExt {
		if err := m.ext.FreeExternalSPT(t, p.gfn, p.level+1, p.external); err != nil {
			m.c.leakedExt.Add(1)
			m.emit(t, "leak_external_spt", p.gfn, p.level+1, p.external, MirrorRoot, err.Error())
			p.hasExt = false // sp->external_spt = NULL: leaked
		}
	}
	m.emit(t, "free_pt", p.gfn, p.level, p.pfn, p.root, "")
	m.freePage(t, p)
}

// Destroy tears the page tables down at VM destruction: both roots are
// invalidated and zapped under mmu_lock for write (kvm_mmu_uninit_tdp_mmu),
// which reclaims every S-EPT page of the mirror root (the HKID is already
// released by then), then the root pages and the vCPUs' caches are freed
// (kvm_mmu_destroy, kvm_mmu_free_memory_caches).
func (m *MMU) Destroy(t *sched.Thread) {
	m.lock.Lock(t)
	for _, root := range []Root{DirectRoot, MirrorRoot} {
		r := m.root(root)
		if r == nil {
			continue
		}
		m.zapRoot(t, r)
		m.freePage(t, r)
		m.roots[root].Store(nil)
	}
	m.destroyed = true
	m.lock.Unlock(t)
	if m.splitPT != nil {
		_ = m.splitPT.Release(t)
		_ = m.splitExt.Release(t)
	}
	for _, v := range m.vcpus {
		_ = v.PageCache.Release(t)
		if v.ExternalSPTCache != nil {
			_ = v.ExternalSPTCache.Release(t)
		}
	}
}
