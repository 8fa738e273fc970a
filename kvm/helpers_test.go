package kvm_test

import (
	"fmt"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/internal/testkit"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/sched"
)

// world is one host with /dev/kvm and the thread a test runs in.
type world struct {
	*testkit.Host
	t  *testing.T
	th *sched.Thread
}

// run executes fn in one simulated thread over a fresh 16 GiB host with
// the default KVM configuration, and fails on any lockdep report.
func run(t *testing.T, fn func(w *world)) *sched.Scheduler {
	t.Helper()
	return start(t, testkit.Config{}, 1, fn)
}

// runWith is run on the host cfg describes (Bytes 0: 16 GiB).
func runWith(t *testing.T, cfg testkit.Config, fn func(w *world)) *sched.Scheduler {
	t.Helper()
	return start(t, cfg, 1, fn)
}

// runSeed is run under the interleaving seed picks.
func runSeed(t *testing.T, seed uint64, fn func(w *world)) *sched.Scheduler {
	t.Helper()
	return start(t, testkit.Config{}, seed, fn)
}

func start(t *testing.T, cfg testkit.Config, seed uint64, fn func(w *world)) *sched.Scheduler {
	t.Helper()
	if cfg.Bytes == 0 {
		cfg.Bytes = 16 * addr.GiB
	}
	w := &world{Host: testkit.NewHost(t, cfg), t: t}
	s := w.Run(t, seed, func(th *sched.Thread) {
		w.th = th
		fn(w)
	})
	testkit.NoLockdep(t, s)
	return s
}

func (w *world) vm(typ kvm.VMType) *kvm.VM {
	vm, err := w.KVM.CreateVM(w.th, typ)
	if err != nil {
		w.t.Fatalf("KVM_CREATE_VM: %v", err)
	}
	return vm
}

func (w *world) gmem(vm *kvm.VM, a gmem.CreateArgs) *gmem.File {
	f, err := vm.CreateGuestMemfd(w.th, a)
	if err != nil {
		w.t.Fatalf("KVM_CREATE_GUEST_MEMFD %+v: %v", a, err)
	}
	return f
}

func (w *world) slot(vm *kvm.VM, id uint32, gpa, size uint64, f *gmem.File, off uint64) {
	r := kvm.Region{Slot: id, GuestPhysAddr: gpa, MemorySize: size, UserspaceAddr: 1 << 40}
	if f != nil {
		r.Flags, r.GuestMemfd, r.GuestMemfdOffset = kvm.MemGuestMemfd, kvm.FD{File: f}, off
	}
	if err := vm.SetUserMemoryRegion2(w.th, r); err != nil {
		w.t.Fatalf("KVM_SET_USER_MEMORY_REGION2 %+v: %v", r, err)
	}
}

// bind makes a guest_memfd from a on vm and binds it as slot 1 from GPA
// 0 for size bytes.
func (w *world) bind(vm *kvm.VM, a gmem.CreateArgs, size uint64) *gmem.File {
	f := w.gmem(vm, a)
	w.slot(vm, 1, 0, size, f, 0)
	return f
}

// recorded is a VM of typ whose arch MMU is a recMMU, with a guest_memfd
// from a bound as slot 1 from GPA 0 for size bytes.
func (w *world) recorded(typ kvm.VMType, a gmem.CreateArgs, size uint64) (*kvm.VM, *recMMU, *gmem.File) {
	vm := w.vm(typ)
	m := &recMMU{t: w.t, vm: vm}
	vm.SetMMU(m)
	return vm, m, w.bind(vm, a, size)
}

func (w *world) attrs(vm *kvm.VM, gpa, size uint64, private bool) {
	a := kvm.MemoryAttributes{Address: gpa, Size: size}
	if private {
		a.Attributes = gmem.AttrPrivate
	}
	if err := vm.SetMemoryAttributes(w.th, a); err != nil {
		w.t.Fatalf("KVM_SET_MEMORY_ATTRIBUTES %+v: %v", a, err)
	}
}

// recMMU records what KVM asks of the arch MMU, and checks that mmu_lock
// is held for write as the kernel asserts.
type recMMU struct {
	t       *testing.T
	vm      *kvm.VM
	calls   []string
	splitEr error
}

func (m *recMMU) lockCheck(t *sched.Thread, what string) {
	if !m.vm.MMULock().HeldWrite(t) {
		m.t.Errorf("%s called without mmu_lock held for write", what)
	}
}

// filterNames spells a zap's filter as the recorded calls do.
var filterNames = map[gmem.Filter]string{
	gmem.FilterShared:                      "shared",
	gmem.FilterPrivate:                     "private",
	gmem.FilterShared | gmem.FilterPrivate: "shared|private",
}

func (m *recMMU) UnmapGFNRange(t *sched.Thread, r gmem.Range) bool {
	m.lockCheck(t, "unmap")
	m.calls = append(m.calls, fmt.Sprintf("unmap %s [%#x,%#x)", filterNames[r.Filter], uint64(r.Start), uint64(r.End)))
	return true
}

func (m *recMMU) SplitCrossBoundary(t *sched.Thread, r gmem.Range) error {
	m.lockCheck(t, "split")
	m.calls = append(m.calls, fmt.Sprintf("split [%#x,%#x)", uint64(r.Start), uint64(r.End)))
	return m.splitEr
}

func (m *recMMU) TopUpSplitCache(t *sched.Thread) error { return nil }

func (m *recMMU) FlushShadowMemslot(t *sched.Thread, s *kvm.Memslot) {
	m.calls = append(m.calls, fmt.Sprintf("flush_memslot %d", s.ID()))
}

func (m *recMMU) FlushRemoteTLBs(t *sched.Thread) {
	m.lockCheck(t, "flush")
	m.calls = append(m.calls, "flush_tlbs")
}

func (m *recMMU) take() []string {
	c := m.calls
	m.calls = nil
	return c
}

func gfn(gpa uint64) addr.GFN { return addr.GFN(gpa >> addr.PageShift) }

func (m *recMMU) ZapAll(t *sched.Thread) { m.calls = append(m.calls, "zap_all") }

func (m *recMMU) ZapGFNRange(t *sched.Thread, start, end addr.GFN) {
	m.calls = append(m.calls, fmt.Sprintf("zap_gfn_range [%#x,%#x)", uint64(start), uint64(end)))
}

func (m *recMMU) Destroy(t *sched.Thread) { m.calls = append(m.calls, "destroy") }
