package check_test

import (
	"slices"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/guest"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/vmm"
)

// A TD with private and shared memory mapped passes every invariant; then
// each corruption is caught by its invariant, and only by it.
func TestInvariantsCatchCorruption(t *testing.T) {
	cfg := vmm.Config{MemBytes: 32 << 20, VCPUs: 1}
	h, err := vmm.NewHost(vmm.HostConfig{Bytes: 1 << 30, DynamicPAMT: true, Packages: 1, TDs: []vmm.Config{cfg}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	broken := func(w check.World) []string {
		var invs []string
		for _, v := range check.Step(w).Violations {
			if !slices.Contains(invs, v.Invariant) {
				invs = append(invs, v.Invariant)
			}
		}
		return invs
	}
	s := sched.New(sched.Deterministic, 1, nil)
	s.Go("vmm", func(th *sched.Thread) {
		m, err := vmm.Create(th, h, cfg)
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := m.Finalize(th); err != nil {
			t.Error(err)
			return
		}
		g, err := guest.New(m.TD, m.VCPUs, guest.Config{RAM: []guest.Range{{GPA: 0, Size: cfg.MemBytes}}, MaxAcceptLevel: addr.Level2M})
		if err != nil {
			t.Error(err)
			return
		}
		v := m.VCPUs[0]
		const shared = 4 << 20
		if err := g.AcceptRange(th, v, 0, 8<<20); err != nil {
			t.Error(err)
		}
		for gpa := uint64(0); gpa < 1<<20; gpa += addr.PageSize {
			if err := g.Touch(th, v, gpa, true); err != nil {
				t.Error(err)
			}
		}
		if err := g.ConvertToShared(th, v, shared, 64<<10); err != nil {
			t.Error(err)
		}
		if err := g.UseShared(th, v, shared, 64<<10); err != nil {
			t.Error(err)
		}
		v.Halt()
		w := check.World{Host: h, DynamicPAMT: true, TDs: []check.TD{{Name: "td0", VM: m.VM, TD: m.TD, Gmem: m.Gmem}}}
		res := check.Step(w)
		if len(res.Violations) != 0 || len(res.Ran) < 6 {
			t.Errorf("clean TD: ran %v, violations %v", res.Ran, res.Violations)
		}

		// An uncharged allocation for the VM.
		p, err := h.Mem.Alloc(th, hostmem.Request{Source: hostmem.SourceBuddy, Account: m.VM.Account()})
		if err != nil {
			t.Error(err)
		}
		if got := broken(w); !slices.Equal(got, []string{check.Charged}) {
			t.Errorf("uncharged page: broken %v, want [%s]", got, check.Charged)
		}
		_ = h.Mem.Free(th, p, hostmem.SourceBuddy)

		// Private content showing through a shared mapping.
		l, ok := m.TD.MMU().Lookup(mmu.DirectRoot, (addr.GPA(shared).GFN() | m.VM.SharedBit()))
		if !ok {
			t.Fatal("no shared leaf")
		}
		old := h.Mem.Tag(l.PFN)
		_ = h.Mem.SetTag(th, l.PFN, g.PrivateTag(0))
		if got := broken(w); !slices.Equal(got, []string{check.SharedNotPrivate}) {
			t.Errorf("private tag in a shared page: broken %v, want [%s]", got, check.SharedNotPrivate)
		}
		_ = h.Mem.SetTag(th, l.PFN, old)
		if got := broken(w); len(got) != 0 {
			t.Errorf("restored: broken %v", got)
		}
	})
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
}
