package kvm_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/internal/testkit"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/sched"
)

func TestMemoryAttributesValidation(t *testing.T) {
	run(t, func(w *world) {
		td := w.vm(kvm.TDXVM)
		def := w.vm(kvm.DefaultVM)
		for _, c := range []struct {
			name string
			vm   *kvm.VM
			a    kvm.MemoryAttributes
			want errno.Errno
		}{
			{"private on a TDX VM", td, kvm.MemoryAttributes{Address: 0, Size: 2 * addr.MiB, Attributes: gmem.AttrPrivate}, 0},
			{"flags", td, kvm.MemoryAttributes{Size: 4096, Flags: 1}, errno.EINVAL},
			{"unknown attribute", td, kvm.MemoryAttributes{Size: 4096, Attributes: 1}, errno.EINVAL},
			{"private on a default VM", def, kvm.MemoryAttributes{Size: 4096, Attributes: gmem.AttrPrivate}, errno.EINVAL},
			{"shared on a default VM", def, kvm.MemoryAttributes{Size: 4096}, 0},
			{"size 0", td, kvm.MemoryAttributes{Address: 4096}, errno.EINVAL},
			{"wrap", td, kvm.MemoryAttributes{Address: ^uint64(4095), Size: 8192}, errno.EINVAL},
			{"unaligned address", td, kvm.MemoryAttributes{Address: 1, Size: 4096}, errno.EINVAL},
			{"unaligned size", td, kvm.MemoryAttributes{Size: 100}, errno.EINVAL},
			{"no memslot needed", td, kvm.MemoryAttributes{Address: 1 << 40, Size: 4096, Attributes: gmem.AttrPrivate}, 0},
		} {
			testkit.WantErrno(t, c.name, c.vm.SetMemoryAttributes(w.th, c.a), c.want)
		}
		if !td.IsPrivate(gfn(1<<40)) || td.IsPrivate(gfn(1<<40+4096)) {
			t.Errorf("attributes are kept per GFN, with or without a memslot")
		}
	})
	cfg := kvm.DefaultConfig()
	cfg.MemoryAttributes = false
	runWith(t, testkit.Config{KVM: &cfg}, func(w *world) {
		vm := w.vm(kvm.TDXVM)
		testkit.WantErrno(t, "host without memory attributes", vm.SetMemoryAttributes(w.th, kvm.MemoryAttributes{Size: 4096, Attributes: gmem.AttrPrivate}), errno.ENOTTY)
		if c, _ := vm.CheckExtension(kvm.CapMemoryAttributes); c != 0 {
			t.Errorf("KVM_CAP_MEMORY_ATTRIBUTES = %d without the feature", c)
		}
	})
}

// TestMixedTracking checks lpage_info's MIXED flag at 2M and 1G
// (kvm_arch_post_set_memory_attributes) and the slot-edge rules.
func TestMixedTracking(t *testing.T) {
	run(t, func(w *world) {
		vm := w.vm(kvm.TDXVM)
		w.bind(vm, gmem.CreateArgs{Size: 4 * addr.GiB}, 2*addr.GiB)
		s := vm.SlotAt(0)
		w.attrs(vm, 0, 2*addr.GiB, true)
		for _, g := range []uint64{0, 2 * addr.MiB, addr.GiB} {
			if s.Mixed(addr.Level2M, gfn(g)) || !s.HugePageAllowed(addr.Level2M, gfn(g)) {
				t.Errorf("2M page at %#x mixed after a uniform conversion", g)
			}
		}
		if !s.HugePageAllowed(addr.Level1G, 0) {
			t.Errorf("1G page at 0 not allowed")
		}
		// One 4K page shared inside the first 2M page.
		w.attrs(vm, addr.MiB, 4096, false)
		if !s.Mixed(addr.Level2M, 0) || s.Mixed(addr.Level2M, gfn(2*addr.MiB)) {
			t.Errorf("MIXED after a 4K conversion: 2M@0 %v, 2M@2M %v", s.Mixed(addr.Level2M, 0), s.Mixed(addr.Level2M, gfn(2*addr.MiB)))
		}
		if !s.Mixed(addr.Level1G, 0) || s.Mixed(addr.Level1G, gfn(addr.GiB)) {
			t.Errorf("1G MIXED must follow its 2M pages")
		}
		// Back to private: uniform again at both levels.
		w.attrs(vm, addr.MiB, 4096, true)
		if s.Mixed(addr.Level2M, 0) || s.Mixed(addr.Level1G, 0) {
			t.Errorf("MIXED not cleared when the range is uniform again")
		}
		// Slot edges: a slot at 1M..5M cuts both 2M pages at its edges.
		f2 := w.gmem(vm, gmem.CreateArgs{Size: 8 * addr.MiB})
		// userspace_addr congruent with the GPA modulo 2M, so only the
		// edges matter.
		if err := vm.SetUserMemoryRegion2(w.th, kvm.Region{Slot: 2, Flags: kvm.MemGuestMemfd, GuestPhysAddr: 4*addr.GiB + addr.MiB,
			MemorySize: 4 * addr.MiB, UserspaceAddr: 1<<40 + addr.MiB, GuestMemfd: kvm.FD{File: f2}}); err != nil {
			t.Fatal(err)
		}
		s2 := vm.SlotAt(gfn(4*addr.GiB + addr.MiB))
		if s2.HugePageAllowed(addr.Level2M, gfn(4*addr.GiB)) || !s2.HugePageAllowed(addr.Level2M, gfn(4*addr.GiB+2*addr.MiB)) ||
			s2.HugePageAllowed(addr.Level2M, gfn(4*addr.GiB+4*addr.MiB)) {
			t.Errorf("slot-edge huge pages must be disallowed, the inner one allowed")
		}
		// GFN and userspace address misaligned: no huge page at all.
		f3 := w.gmem(vm, gmem.CreateArgs{Size: 4 * addr.MiB})
		r := kvm.Region{Slot: 3, Flags: kvm.MemGuestMemfd, GuestPhysAddr: 8 * addr.GiB, MemorySize: 4 * addr.MiB,
			UserspaceAddr: 1<<40 + 4096, GuestMemfd: kvm.FD{File: f3}}
		if err := vm.SetUserMemoryRegion2(w.th, r); err != nil {
			t.Fatal(err)
		}
		if vm.SlotAt(gfn(8*addr.GiB)).HugePageAllowed(addr.Level2M, gfn(8*addr.GiB)) {
			t.Errorf("huge page allowed although GFN and userspace address disagree in alignment")
		}
	})
}

// TestAttributeChangeZaps checks the rule for attribute changes:
// going shared zaps the private (mirror) mappings, going private zaps the
// shared ones, under mmu_lock for write and bracketed by an invalidation
// that covers the whole non-mixed huge pages at the edges; only the GFNs
// whose attribute changes are unmapped.
func TestAttributeChangeZaps(t *testing.T) {
	run(t, func(w *world) {
		vm, m, _ := w.recorded(kvm.TDXVM, gmem.CreateArgs{Size: 8 * addr.MiB}, 8*addr.MiB)
		w.attrs(vm, 0, 8*addr.MiB, true)
		if got := m.take(); !slices.Equal(got, []string{"unmap shared [0x0,0x800)", "flush_tlbs"}) {
			t.Errorf("to private: %q", got)
		}
		seq := vm.InvalidateSeq()
		w.attrs(vm, 2*addr.MiB+4096, 4096, false)
		// Private huge leaves cut by the range are split first; only the
		// changed GFN is unmapped; its uniform 2M page joined the
		// invalidation, so a huge fault racing with it retries.
		if got := m.take(); !slices.Equal(got, []string{"split [0x201,0x202)", "unmap private [0x201,0x202)", "flush_tlbs"}) {
			t.Errorf("to shared inside a huge page: %q", got)
		}
		if vm.InvalidateSeq() == seq || vm.InvalidateInProgress() != 0 {
			t.Errorf("the invalidation must end and bump the sequence")
		}
		if !vm.InvalidateRetry(seq, gfn(5*addr.MiB)) {
			t.Errorf("a fault that snapshotted the old sequence must retry")
		}
		// Unchanged attributes: nothing happens.
		w.attrs(vm, 0, 2*addr.MiB, true)
		if got := m.take(); len(got) != 0 {
			t.Errorf("a no-op attribute change zapped: %q", got)
		}
	})
}

// TestZapRules checks which events zap private memory: gmem punch
// hole, gmem release and memslot deletion do; MMU-notifier invalidations
// of the VMM's address space never do.
func TestZapRules(t *testing.T) {
	run(t, func(w *world) {
		vm, m, f := w.recorded(kvm.TDXVM, gmem.CreateArgs{Size: 8 * addr.MiB}, 4*addr.MiB)
		w.slot(vm, 2, 1<<32, 4*addr.MiB, nil, 0) // a shared-only slot at ua 1<<40
		w.attrs(vm, 0, 4*addr.MiB, true)
		m.take()

		vm.MMUNotifierInvalidate(w.th, 1<<40, 8*addr.MiB)
		for _, c := range m.take() {
			if strings.Contains(c, "private") {
				t.Errorf("MMU notifier touched private memory: %q", c)
			}
		}
		if err := f.Fallocate(w.th, gmem.FallocPunchHole|gmem.FallocKeepSize, 0, 2*addr.MiB); err != nil {
			t.Fatal(err)
		}
		if got := m.take(); !slices.Equal(got, []string{"split [0x0,0x200)", "unmap private [0x0,0x200)", "flush_tlbs"}) {
			t.Errorf("punch hole: %q", got)
		}
		w.slot(vm, 1, 0, 0, f, 0) // delete
		if got := m.take(); !slices.Equal(got, []string{"flush_memslot 1"}) {
			t.Errorf("memslot delete: %q", got)
		}
		if vm.SlotAt(0) != nil {
			t.Errorf("slot 1 still present")
		}
		// The range is unbound: a punch now zaps nothing.
		f.Fallocate(w.th, gmem.FallocPunchHole|gmem.FallocKeepSize, 0, 4*addr.MiB)
		if got := m.take(); len(got) != 0 {
			t.Errorf("punch of an unbound range zapped: %q", got)
		}
	})
}

func TestKVMBugOn(t *testing.T) {
	run(t, func(w *world) {
		vm := w.vm(kvm.TDXVM)
		f := w.gmem(vm, gmem.CreateArgs{Size: 4 * addr.MiB})
		v, err := vm.CreateVCPU(w.th, 0)
		if err != nil {
			t.Fatal(err)
		}
		testkit.WantErrno(t, "vcpu runs", v.CheckRequests(), 0)
		err = vm.Bug(w.th, "TDH.MEM.PAGE.REMOVE failed")
		testkit.WantErrno(t, "KVM_BUG_ON", err, errno.EIO)
		if b, why := vm.Bugged(); !b || !strings.Contains(why, "REMOVE") {
			t.Errorf("Bugged() = %v %q", b, why)
		}
		testkit.WantErrno(t, "KVM_RUN after bug", v.CheckRequests(), errno.EIO)
		testkit.WantErrno(t, "SET_MEMORY_ATTRIBUTES", vm.SetMemoryAttributes(w.th, kvm.MemoryAttributes{Size: 4096}), errno.EIO)
		testkit.WantErrno(t, "SET_USER_MEMORY_REGION2", vm.SetUserMemoryRegion2(w.th, kvm.Region{Slot: 1, MemorySize: 4096}), errno.EIO)
		_, err = vm.CreateGuestMemfd(w.th, gmem.CreateArgs{Size: 4096})
		testkit.WantErrno(t, "CREATE_GUEST_MEMFD", err, errno.EIO)
		_, err = vm.CreateVCPU(w.th, 1)
		testkit.WantErrno(t, "CREATE_VCPU", err, errno.EIO)
		_, err = vm.CheckExtension(kvm.CapGuestMemfd)
		testkit.WantErrno(t, "CHECK_EXTENSION", err, errno.EIO)
		// guest_memfd file operations still work: the file is not the VM.
		testkit.WantErrno(t, "fallocate on a dead VM's gmem", f.Fallocate(w.th, gmem.FallocKeepSize, 0, 4096), 0)
		// A second KVM_BUG_ON keeps the first reason.
		vm.Bug(w.th, "second")
		if _, why := vm.Bugged(); strings.Contains(why, "second") {
			t.Errorf("second KVM_BUG_ON overwrote the reason")
		}
	})
}

// TestLockOrder runs the paths that take slots_lock, the invalidate lock
// and mmu_lock, and checks lockdep sees the kernel's order and no cycle.
func TestLockOrder(t *testing.T) {
	s := run(t, func(w *world) {
		vm, _, f := w.recorded(kvm.TDXVM, gmem.CreateArgs{Size: 8 * addr.MiB}, 8*addr.MiB)
		w.attrs(vm, 0, 8*addr.MiB, true)
		f.Fallocate(w.th, gmem.FallocKeepSize, 0, 4*addr.MiB)
		f.Fallocate(w.th, gmem.FallocPunchHole|gmem.FallocKeepSize, 0, 2*addr.MiB)
		f.Close(w.th)
	})
	edges := strings.Join(s.LockDep().Edges(), "\n")
	for _, e := range []string{"kvm.slots_lock -> mapping.invalidate_lock", "mapping.invalidate_lock -> kvm.mmu_lock"} {
		if !strings.Contains(edges, e) {
			t.Errorf("lock order %q not seen; edges:\n%s", e, edges)
		}
	}
}

// TestFaultInPFN checks the private/shared resolution of a fault.
func TestFaultInPFN(t *testing.T) {
	run(t, func(w *world) {
		vm := w.vm(kvm.TDXVM)
		f := w.bind(vm, gmem.CreateArgs{Size: 8 * addr.MiB}, 4*addr.MiB)
		w.slot(vm, 2, 1<<32, 4*addr.MiB, nil, 0)
		w.attrs(vm, 0, 4*addr.MiB, true)
		v, _ := vm.CreateVCPU(w.th, 0)

		fault, err := v.FaultInPFN(w.th, gfn(4096), true)
		if err != nil || !fault.HasPFN {
			t.Fatalf("private fault: %v", err)
		}
		if fo, _ := w.Mem.FolioOf(fault.PFN); fo.Ref != 2 || fo.Account != vm.Account() || !fo.Charged {
			t.Errorf("page handed out with %+v: want gmem's ref + the fault's, charged to the VM", fo)
		}
		if w.Mem.Tag(fault.PFN) != 0 {
			t.Errorf("a fresh private page must be zeroed")
		}
		w.Mem.Put(w.th, fault.PFN)

		var mf *kvm.MemoryFault
		_, err = v.FaultInPFN(w.th, gfn(4096), false)
		if !errors.As(err, &mf) || mf.Errno != errno.EFAULT || mf.Private || mf.GPA != 4096 {
			t.Errorf("shared access to a private GFN: %v", err)
		}
		_, err = v.FaultInPFN(w.th, gfn(1<<32), true)
		if !errors.As(err, &mf) || !mf.Private {
			t.Errorf("private access to a shared GFN: %v", err)
		}
		fault, err = v.FaultInPFN(w.th, gfn(1<<32+8192), false)
		if err != nil || fault.HasPFN || fault.HVA != 1<<40+8192 {
			t.Errorf("shared fault must resolve to the userspace address: %+v %v", fault, err)
		}
		// Private attribute on a slot without guest_memfd.
		w.attrs(vm, 1<<32, 4096, true)
		_, err = v.FaultInPFN(w.th, gfn(1<<32), true)
		testkit.WantErrno(t, "private fault on a slot without guest_memfd", err, errno.EFAULT)

		// Memory failure: the folio is zapped, then refused.
		if err := f.MemoryFailure(w.th, 1); err != nil {
			t.Fatal(err)
		}
		_, err = v.FaultInPFN(w.th, gfn(4096), true)
		testkit.WantErrno(t, "fault on a hwpoisoned page", err, errno.EHWPOISON)

		// The file is closed: its slots fault with EFAULT.
		f.Close(w.th)
		_, err = v.FaultInPFN(w.th, gfn(8192), true)
		testkit.WantErrno(t, "fault after the guest_memfd was released", err, errno.EFAULT)
		if f.Pages() != 0 || w.Mem.Usage(vm.Account()).Charged != 0 {
			t.Errorf("released file still holds %d pages; account holds %+v", f.Pages(), w.Mem.Usage(vm.Account()))
		}
	})
}

// TestPopulate checks kvm_gmem_populate's rules.
func TestPopulate(t *testing.T) {
	run(t, func(w *world) {
		vm := w.vm(kvm.TDXVM)
		f := w.bind(vm, gmem.CreateArgs{Size: 8 * addr.MiB}, 16*4096)
		w.attrs(vm, 0, 8*4096, true)
		s := vm.SlotAt(0)
		var seen []addr.GFN
		cb := func(t *sched.Thread, g addr.GFN, pfn addr.PFN, src addr.PFN) error {
			seen = append(seen, g)
			return w.Mem.SetTag(t, pfn, hostmem.MakeTag(7, uint64(g)))
		}
		vm.SlotsLock().Lock(w.th)
		n, err := gmem.Populate(w.th, s, 0, nil, 4, cb)
		if n != 4 || err != nil || len(seen) != 4 {
			t.Errorf("populate 4 private pages: n=%d err=%v seen=%v", n, err, seen)
		}
		// Stops at the first shared GFN: pages 6,7 done, 8 refused.
		n, err = gmem.Populate(w.th, s, 6, nil, 4, cb)
		if n != 2 || err != nil {
			t.Errorf("populate across the private edge: n=%d err=%v", n, err)
		}
		n, err = gmem.Populate(w.th, s, 8, nil, 1, cb)
		if n != 0 {
			t.Errorf("populate a shared GFN: n=%d", n)
		}
		testkit.WantErrno(t, "populate a shared GFN", err, errno.EINVAL)
		_, err = gmem.Populate(w.th, s, 0, nil, 0, cb)
		testkit.WantErrno(t, "npages 0", err, errno.EINVAL)
		// Clamped to the slot end.
		vm.SlotsLock().Unlock(w.th)
		w.attrs(vm, 0, 16*4096, true)
		vm.SlotsLock().Lock(w.th)
		seen = nil
		n, _ = gmem.Populate(w.th, s, 14, nil, 10, cb)
		if n != 2 {
			t.Errorf("populate past the slot end: n=%d, want 2 (clamped)", n)
		}
		vm.SlotsLock().Unlock(w.th)
		pfn, _ := f.PFNAt(2)
		if w.Mem.Tag(pfn) != hostmem.MakeTag(7, 2) || !f.Page(2).Uptodate {
			t.Errorf("populated page lost its content or up-to-date flag")
		}
	})
}

// TestHugeTLBGmem checks 2 MiB and 1 GiB guest_memfd folios and guest_memfd's
// mapping order.
func TestHugeTLBGmem(t *testing.T) {
	runWith(t, testkit.Config{Huge2M: 8, Huge1G: 1}, func(w *world) {
		vm := w.vm(kvm.TDXVM)
		_, err := vm.CreateGuestMemfd(w.th, gmem.CreateArgs{Size: 4 * addr.MiB, Flags: gmem.FlagHugeTLB, PageOrder: 3})
		testkit.WantErrno(t, "page order 3", err, errno.EINVAL)
		_, err = vm.CreateGuestMemfd(w.th, gmem.CreateArgs{Size: 3 * addr.MiB, Flags: gmem.FlagHugeTLB, PageOrder: addr.Order2M})
		testkit.WantErrno(t, "size not a multiple of 2M", err, errno.EINVAL)
		_, err = vm.CreateGuestMemfd(w.th, gmem.CreateArgs{Size: 4 * addr.MiB, PageOrder: addr.Order2M})
		testkit.WantErrno(t, "page order without HUGETLB", err, errno.EINVAL)

		f := w.gmem(vm, gmem.CreateArgs{Size: 8 * addr.MiB, Flags: gmem.FlagHugeTLB, PageOrder: addr.Order2M})
		testkit.WantErrno(t, "4K fallocate of a 2M file", f.Fallocate(w.th, gmem.FallocKeepSize, 0, 4096), errno.EINVAL)
		w.slot(vm, 1, 0, 8*addr.MiB, f, 0)
		w.attrs(vm, 0, 8*addr.MiB, true)
		s := vm.SlotAt(0)
		if o := gmem.MappingOrder(s, gfn(addr.MiB)); o != addr.Order2M {
			t.Errorf("MappingOrder = %d, want 9", o)
		}
		v, _ := vm.CreateVCPU(w.th, 0)
		fault, err := v.FaultInPFN(w.th, gfn(addr.MiB+4096), true)
		if err != nil || fault.MaxOrder != addr.Order2M || fault.MappingOrder != addr.Order2M {
			t.Fatalf("fault on a 2M file: %+v %v", fault, err)
		}
		if fo, _ := w.Mem.FolioOf(fault.PFN); fo.Source != hostmem.SourceHuge2M || fo.Order != addr.Order2M {
			t.Errorf("folio %+v: want a 2M hugetlb folio", fo)
		}
		w.Mem.Put(w.th, fault.PFN)
		if p2, _ := w.Mem.PoolFree(); p2 != 7 {
			t.Errorf("2M pool free = %d, want 7", p2)
		}
		testkit.WantErrno(t, "punch 2M", f.Fallocate(w.th, gmem.FallocPunchHole|gmem.FallocKeepSize, 0, 2*addr.MiB), 0)
		if p2, _ := w.Mem.PoolFree(); p2 != 8 {
			t.Errorf("punch did not return the folio to the pool: %d free", p2)
		}

		g := w.gmem(vm, gmem.CreateArgs{Size: addr.GiB, Flags: gmem.FlagHugeTLB, PageOrder: addr.Order1G})
		w.slot(vm, 2, 4*addr.GiB, addr.GiB, g, 0)
		w.attrs(vm, 4*addr.GiB, addr.GiB, true)
		if o := gmem.MappingOrder(vm.SlotAt(gfn(4*addr.GiB)), gfn(4*addr.GiB+5*addr.MiB)); o != addr.Order1G {
			t.Errorf("1G MappingOrder = %d", o)
		}
		g.Close(w.th)
		if _, p1 := w.Mem.PoolFree(); p1 != 1 {
			t.Errorf("1G folio not returned on release")
		}
	})
}

// TestInPlaceConversion checks KVM_SET_MEMORY_ATTRIBUTES2 on an in-place
// guest_memfd: the refcount rule of "KVM: TDX: Drop superfluous page pinning in S-EPT management", folio split and merge, and
// guest_memfd's mapping order.
func TestInPlaceConversion(t *testing.T) {
	runWith(t, testkit.Config{Huge2M: 4}, func(w *world) {
		vm, m, f := w.recorded(kvm.TDXVM, gmem.CreateArgs{Size: 4 * addr.MiB, Flags: gmem.FlagHugeTLB | gmem.FlagMMAP, PageOrder: addr.Order2M, InPlace: true}, 4*addr.MiB)
		s := vm.SlotAt(0)
		if !vm.IsPrivate(0) {
			t.Fatalf("an in-place file without INIT_SHARED starts private")
		}
		if err := f.Fallocate(w.th, gmem.FallocKeepSize, 0, 4*addr.MiB); err != nil {
			t.Fatal(err)
		}
		m.take()
		// To shared: split the S-EPT first, then the folio.
		if _, err := f.SetAttributes(w.th, 4096, 4096, 0, 0); err != nil {
			t.Fatal(err)
		}
		if got := m.take(); !slices.Equal(got[:2], []string{"split [0x1,0x2)", "unmap shared|private [0x1,0x2)"}) {
			t.Errorf("to shared: %q", got)
		}
		if vm.IsPrivate(gfn(4096)) || !vm.IsPrivate(0) {
			t.Errorf("kvm_mem_is_private must follow the file")
		}
		if o := gmem.MappingOrder(s, 0); o != 0 {
			t.Errorf("mapping order after a 4K conversion = %d, want 0", o)
		}
		if pi := f.Page(0); pi.FolioOrder != 0 {
			t.Errorf("folio not split: order %d", pi.FolioOrder)
		}
		if o := gmem.MappingOrder(s, gfn(2*addr.MiB)); o != addr.Order2M {
			t.Errorf("the other 2M page must stay huge: %d", o)
		}
		// The host maps the shared page; someone else holds a reference
		// (a pin): conversion back to private must fail with EAGAIN.
		mp, err := f.Mmap(w.th, 0, 4*addr.MiB, gmem.ProtRead|gmem.ProtWrite, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := mp.Store(w.th, 4096, 0x11); err != nil {
			t.Fatal(err)
		}
		if _, err := mp.Load(w.th, 0); !errors.Is(err, gmem.ErrSIGBUS) {
			t.Errorf("host read of a private page: %v, want SIGBUS", err)
		}
		pfn, _ := f.PFNAt(1)
		w.Mem.Get(pfn)
		off, err := f.SetAttributes(w.th, 4096, 4096, gmem.AttrPrivate, 0)
		testkit.WantErrno(t, "to private with an extra reference", err, errno.EAGAIN)
		if off != 4096 {
			t.Errorf("error_offset = %#x, want 0x1000", off)
		}
		if vm.IsPrivate(gfn(4096)) {
			t.Errorf("a failed conversion changed the attribute")
		}
		w.Mem.Put(w.th, pfn)
		if _, err := f.SetAttributes(w.th, 4096, 4096, gmem.AttrPrivate, 0); err != nil {
			t.Fatalf("to private once the reference is gone: %v", err)
		}
		if _, err := mp.Load(w.th, 4096); !errors.Is(err, gmem.ErrSIGBUS) {
			t.Errorf("the user mapping must be gone after conversion to private")
		}
		if o := gmem.MappingOrder(s, 0); o != addr.Order2M || f.Page(0).FolioOrder != addr.Order2M {
			t.Errorf("folio not merged back: mapping order %d", o)
		}
		for _, c := range []struct {
			name                    string
			off, size, attrs, flags uint64
			want                    errno.Errno
		}{
			{"flags", 0, 4096, 0, 1, errno.EINVAL},
			{"attribute", 0, 4096, 1, 0, errno.EINVAL},
			{"size 0", 0, 0, 0, 0, errno.EINVAL},
			{"unaligned", 1, 4096, 0, 0, errno.EINVAL},
			{"past EOF", 4 * addr.MiB, 4096, 0, 0, errno.EINVAL},
		} {
			_, err := f.SetAttributes(w.th, c.off, c.size, c.attrs, c.flags)
			testkit.WantErrno(t, "SET_MEMORY_ATTRIBUTES2 "+c.name, err, c.want)
		}
		mp.Munmap(w.th)
		plain := w.gmem(vm, gmem.CreateArgs{Size: 4 * addr.MiB})
		_, err = plain.SetAttributes(w.th, 0, 4096, 0, 0)
		testkit.WantErrno(t, "SET_MEMORY_ATTRIBUTES2 on a file in KVM-attribute mode", err, errno.ENOTTY)
		// A failed S-EPT split aborts the conversion and changes nothing.
		m.splitEr = errno.New("split", errno.ENOMEM, "injected")
		_, err = f.SetAttributes(w.th, 2*addr.MiB+4096, 4096, 0, 0)
		testkit.WantErrno(t, "conversion with a failed split", err, errno.ENOMEM)
		if !vm.IsPrivate(gfn(2*addr.MiB+4096)) || f.Page(512).FolioOrder != addr.Order2M {
			t.Errorf("a failed split must leave attributes and folio alone")
		}
	})
}

// TestReleaseAndLifetime checks that guest_memfd keeps its VM alive and
// frees everything, uncharged, when the last reference goes.
func TestReleaseAndLifetime(t *testing.T) {
	run(t, func(w *world) {
		vm := w.vm(kvm.TDXVM)
		f := w.bind(vm, gmem.CreateArgs{Size: 64 * addr.MiB, Flags: gmem.FlagMMAP}, 64*addr.MiB)
		f.Fallocate(w.th, gmem.FallocKeepSize, 0, 64*addr.MiB)
		if u := w.Mem.Usage(vm.Account()); u.Charged != 16384 {
			t.Errorf("account holds %d pages, want 16384", u.Charged)
		}
		vm.Close(w.th)
		if vm.Destroyed() {
			t.Fatalf("the VM must live while its guest_memfd is open")
		}
		mp, _ := f.Mmap(w.th, 0, addr.MiB, gmem.ProtRead, true)
		f.Close(w.th)
		if f.Released() || vm.Destroyed() {
			t.Fatalf("a mapping keeps the file (and the VM) alive")
		}
		mp.Munmap(w.th)
		if !f.Released() || !vm.Destroyed() {
			t.Fatalf("last reference gone: released=%v destroyed=%v", f.Released(), vm.Destroyed())
		}
		if u := w.Mem.Usage(vm.Account()); u.Charged+u.Uncharged != 0 {
			t.Errorf("after release the account still holds %+v", u)
		}
		if w.Mem.Violations() != 0 {
			t.Errorf("hostmem recorded %d violations", w.Mem.Violations())
		}
	})
}
