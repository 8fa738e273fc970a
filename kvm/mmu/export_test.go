package mmu

import (
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/usermem"
)

// SlotFixture is the one memslot the tests of this package run against:
// 8 MiB of guest_memfd at GPA 0 whose low 4 MiB are private, the VMM's
// mapping as its shared half, and one vCPU.
type SlotFixture struct {
	Gmem *gmem.File
	User *usermem.Space
	VCPU *VCPU
}

// NewSlotFixture builds the slot on vm (whose MMU is m) with the given
// guest_memfd arguments (Size is set to 8 MiB).
func NewSlotFixture(t *testing.T, th *sched.Thread, mem *hostmem.Memory, vm *kvm.VM, m *MMU, args gmem.CreateArgs) *SlotFixture {
	t.Helper()
	user, _ := usermem.New(mem, "vmm")
	vm.SetUserMemory(user)
	user.Register(vm)
	hva, _ := user.Mmap(8 << 20)
	args.Size = 8 << 20
	g, err := vm.CreateGuestMemfd(th, args)
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.SetUserMemoryRegion2(th, kvm.Region{Slot: 0, Flags: kvm.MemGuestMemfd, MemorySize: 8 << 20, UserspaceAddr: hva, GuestMemfd: kvm.FD{File: g}}); err != nil {
		t.Fatal(err)
	}
	if err := vm.SetMemoryAttributes(th, kvm.MemoryAttributes{Size: 4 << 20, Attributes: gmem.AttrPrivate}); err != nil {
		t.Fatal(err)
	}
	kv, _ := vm.CreateVCPU(th, 0)
	v, err := m.NewVCPU(kv)
	if err != nil {
		t.Fatal(err)
	}
	return &SlotFixture{Gmem: g, User: user, VCPU: v}
}

// Close closes the guest_memfd, the VM and the VMM's address space.
func (f *SlotFixture) Close(th *sched.Thread, vm *kvm.VM) {
	f.Gmem.Close(th)
	vm.Close(th)
	f.User.Release(th)
}

// MapDirectLeaf is the fault's walk and install (tdpMap) of a 4K leaf in
// the direct root, with whatever locks the caller holds.
func (m *MMU) MapDirectLeaf(t *sched.Thread, v *VCPU, gfn addr.GFN, pfn addr.PFN) (Result, error) {
	return m.tdpMap(t, v, DirectRoot, gfn, addr.Level4K, pfn)
}

// CheckHugeAttrs is the check a huge private leaf gets as it is installed.
func (m *MMU) CheckHugeAttrs(t *sched.Thread, gfn addr.GFN, level addr.Level) {
	m.checkHugeAttrs(t, gfn, level)
}
