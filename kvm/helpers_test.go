package kvm_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/sched"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

// world is one host with /dev/kvm for a test.
type world struct {
	t   *testing.T
	mem *hostmem.Memory
	sys *kvm.System
	th  *sched.Thread
}

// run executes fn in one simulated thread over a fresh host with the
// given KVM configuration, and fails on any lockdep report.
func run(t *testing.T, cfg kvm.Config, hm hostmem.Config, fn func(w *world)) *sched.Scheduler {
	t.Helper()
	if hm.Bytes == 0 {
		hm.Bytes = 16 * gib
	}
	mem, err := hostmem.New(hm, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, mem: mem, sys: kvm.NewSystem(cfg, mem, nil)}
	s := sched.New(sched.Deterministic, 1, nil)
	s.Go("test", func(th *sched.Thread) {
		w.th = th
		fn(w)
	})
	if err := s.Run(); err != nil {
		t.Fatalf("scheduler: %v", err)
	}
	for _, r := range s.LockDep().Reports() {
		t.Errorf("lockdep: %v", r)
	}
	return s
}

func (w *world) vm(typ kvm.VMType) *kvm.VM {
	vm, err := w.sys.CreateVM(w.th, typ)
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

func (w *world) attrs(vm *kvm.VM, gpa, size uint64, private bool) {
	a := kvm.MemoryAttributes{Address: gpa, Size: size}
	if private {
		a.Attributes = gmem.AttrPrivate
	}
	if err := vm.SetMemoryAttributes(w.th, a); err != nil {
		w.t.Fatalf("KVM_SET_MEMORY_ATTRIBUTES %+v: %v", a, err)
	}
}

// wantErrno fails unless err carries want (0 = success).
func wantErrno(t *testing.T, what string, err error, want errno.Errno) {
	t.Helper()
	if got := errno.Of(err); got != want {
		t.Errorf("%s: got %v (%v), want %v", what, got, err, want)
	}
	if want != 0 && !errors.Is(err, want) {
		t.Errorf("%s: error %v does not wrap %v", what, err, want)
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

func filterName(f gmem.Filter) string {
	switch f {
	case gmem.FilterShared:
		return "shared"
	case gmem.FilterPrivate:
		return "private"
	}
	return "shared|private"
}

func (m *recMMU) UnmapGFNRange(t *sched.Thread, r gmem.Range) bool {
	m.lockCheck(t, "unmap")
	m.calls = append(m.calls, fmt.Sprintf("unmap %s [%#x,%#x)", filterName(r.Filter), uint64(r.Start), uint64(r.End)))
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
