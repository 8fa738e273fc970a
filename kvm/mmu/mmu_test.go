package mmu_test

import (
	"errors"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/internal/testkit"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/sched"
)

func TestSPTEValues(t *testing.T) {
	if mmu.FrozenSPTE.Present() || mmu.NonPresent.Present() || mmu.SPTE(0).Present() {
		t.Error("frozen, non-present and zero SPTEs must not be present")
	}
	if uint64(mmu.FrozenSPTE) != 1<<63|0x5a0 {
		t.Errorf("FROZEN_SPTE = %#x, want SHADOW_NONPRESENT_VALUE|0x5a0", uint64(mmu.FrozenSPTE))
	}
	if !mmu.FrozenSPTE.Frozen() || mmu.NonPresent.Frozen() {
		t.Error("Frozen() must recognise FROZEN_SPTE only")
	}
}

// world runs body with a software-protected VM (no mirror root): one 8 MiB
// gmem slot at GPA 0 (private) whose shared half is the VMM's memory.
func world(t *testing.T, body func(th *sched.Thread, vm *kvm.VM, m *mmu.MMU, v *mmu.VCPU, c *event.Counter)) *sched.Scheduler {
	t.Helper()
	h := testkit.NewHost(t, testkit.Config{Bytes: 256 << 20})
	return h.Run(t, 1, func(th *sched.Thread) {
		vm, err := h.KVM.CreateVM(th, kvm.SWProtectedVM)
		if err != nil {
			t.Fatal(err)
		}
		m, err := mmu.New(vm, mmu.Config{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		f := mmu.NewSlotFixture(t, th, h.Mem, vm, m, gmem.CreateArgs{})
		body(th, vm, m, f.VCPU, h.Events)
		f.Close(th, vm)
		if u := h.Mem.Usage(vm.Account()); u.Charged+u.Uncharged != 0 {
			t.Errorf("after destroy %+v still charged to the VM (page tables or caches leaked)", u)
		}
	})
}

func fault(t *testing.T, th *sched.Thread, v *mmu.VCPU, gpa uint64, private bool) {
	t.Helper()
	res, err := v.PageFault(th, addr.GPA(gpa), private, addr.Level1G)
	if err != nil || res != mmu.RetFixed {
		t.Fatalf("fault %#x: %v %v", gpa, res, err)
	}
}

// Without a mirror root every fault and zap uses the direct root; a zap
// removes exactly the leaves in its range.
func TestDirectOnlyFaultAndZap(t *testing.T) {
	world(t, func(th *sched.Thread, vm *kvm.VM, m *mmu.MMU, v *mmu.VCPU, c *event.Counter) {
		for g := uint64(0x10000); g < 0x13000; g += 4096 {
			fault(t, th, v, g, true)
		}
		fault(t, th, v, 5<<20, false) // shared, backed by the VMM's memory
		if res, err := v.PageFault(th, 0x10000, true, addr.Level1G); err != nil || res != mmu.RetSpurious {
			t.Errorf("second fault on a mapped page: %v %v, want RET_PF_SPURIOUS", res, err)
		}
		if m.Mirrored() || m.Stats().Mapped[0][0] != 4 || m.Stats().Mapped[1][0] != 0 {
			t.Fatalf("mapped %v, want 4 direct leaves", m.Stats().Mapped)
		}
		// A private access to a shared GFN exits to userspace.
		var mf *kvm.MemoryFault
		if _, err := v.PageFault(th, 5<<20, true, addr.Level1G); !errors.As(err, &mf) || !errors.Is(err, errno.EFAULT) {
			t.Errorf("private fault on a shared GFN: %v, want a KVM_EXIT_MEMORY_FAULT with EFAULT", err)
		}
		vm.MMULock().Lock(th)
		m.UnmapGFNRange(th, gmem.Range{Slot: vm.SlotAt(0x11), Start: 0x11, End: 0x12, Filter: gmem.FilterPrivate})
		vm.MMULock().Unlock(th)
		for gfn, want := range map[addr.GFN]bool{0x10: true, 0x11: false, 0x12: true} {
			if _, ok := m.Lookup(mmu.DirectRoot, gfn); ok != want {
				t.Errorf("gfn %#x mapped = %v, want %v", uint64(gfn), ok, want)
			}
		}
		// A zap without mmu_lock held for write is reported.
		m.UnmapGFNRange(th, gmem.Range{Slot: vm.SlotAt(0x10), Start: 0x10, End: 0x11, Filter: gmem.FilterPrivate})
		if testkit.Reported(c, mmu.RuleLockNotHeld) == 0 {
			t.Error("zap without mmu_lock not reported")
		}
	})
}

// Topping up a cache may sleep, so doing it under mmu_lock is a lockdep
// report; drawing from an empty cache under the lock is a violation and
// fails cleanly with ENOMEM.
func TestCacheRules(t *testing.T) {
	s := world(t, func(th *sched.Thread, vm *kvm.VM, m *mmu.MMU, v *mmu.VCPU, c *event.Counter) {
		cache, err := mmu.NewCache(vm.Memory(), "test.cache", vm.Account(), 2, 4)
		if err != nil {
			t.Fatal(err)
		}
		vm.MMULock().RLock(th)
		if _, err := cache.Take(th); !errors.Is(err, errno.ENOMEM) {
			t.Errorf("take from an empty cache: %v, want ENOMEM", err)
		}
		_ = cache.TopUp(th) // sleeping allocation under a spinning lock
		vm.MMULock().RUnlock(th)
		if cache.Len() != 4 || cache.TopUps != 1 {
			t.Errorf("top-up filled %d pages in %d top-ups, want 4 in 1", cache.Len(), cache.TopUps)
		}
		if err := cache.TopUp(th); err != nil || cache.TopUps != 1 {
			t.Errorf("a full cache topped up again")
		}
		p, _ := cache.Take(th)
		if err := vm.Memory().Free(th, p, hostmem.SourceBuddy); !errors.Is(err, hostmem.ErrWrongSource) {
			t.Errorf("freeing a cache page to the buddy allocator: %v, want ErrWrongSource", err)
		}
		if err := cache.FreePage(th, p); err != nil {
			t.Error(err)
		}
		if err := cache.Release(th); err != nil {
			t.Error(err)
		}
		if testkit.Reported(c, mmu.RuleCacheEmpty) == 0 {
			t.Error("taking from an empty cache was not reported")
		}
	})
	if testkit.Lockdep(s, "lockdep.sleep-in-atomic") == 0 {
		t.Error("a cache top-up under mmu_lock was not reported by lockdep")
	}
}
