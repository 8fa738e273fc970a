package mmu_test

import (
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/internal/testkit"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/sched"
)

// An atomic SPTE change with mmu_lock held (for read, as a fault holds
// it) is silent; without it, it is reported (tdp_mmu_set_spte_atomic()'s
// lockdep_assert_held_read).
func TestAtomicChangeNeedsMMULock(t *testing.T) {
	world(t, func(th *sched.Thread, vm *kvm.VM, m *mmu.MMU, v *mmu.VCPU, c *event.Counter) {
		if err := v.TopUp(th); err != nil {
			t.Error(err)
			return
		}
		if err := v.Load(th); err != nil {
			t.Error(err)
			return
		}
		vm.MMULock().RLock(th)
		res, err := m.MapDirectLeaf(th, v, 0x600, 0x1234)
		vm.MMULock().RUnlock(th)
		if err != nil || res != mmu.RetFixed || testkit.Reported(c, mmu.RuleLockNotHeld) != 0 {
			t.Errorf("map under mmu_lock: %v, %v, %d reports", res, err, testkit.Reported(c, mmu.RuleLockNotHeld))
			return
		}
		if _, err := m.MapDirectLeaf(th, v, 0x601, 0x1235); err != nil {
			t.Error(err)
			return
		}
		if testkit.Reported(c, mmu.RuleLockNotHeld) == 0 {
			t.Error("an SPTE installed without mmu_lock was not reported")
		}
	})
}

// A huge leaf over GFNs that are all private is silent; over a range
// with shared GFNs it is reported as it is made.
func TestHugeLeafOverMixedAttributes(t *testing.T) {
	world(t, func(th *sched.Thread, vm *kvm.VM, m *mmu.MMU, v *mmu.VCPU, c *event.Counter) {
		m.CheckHugeAttrs(th, 0x200, addr.Level2M) // [2M, 4M): private
		if n := testkit.Reported(c, mmu.RuleHugeOverMixed); n != 0 {
			t.Errorf("a 2M leaf over private GFNs reported %d times", n)
		}
		m.CheckHugeAttrs(th, 0x400, addr.Level2M) // [4M, 6M): shared
		if n := testkit.Reported(c, mmu.RuleHugeOverMixed); n != 1 {
			t.Errorf("a 2M leaf over shared GFNs reported %d times, want 1", n)
		}
	})
}
