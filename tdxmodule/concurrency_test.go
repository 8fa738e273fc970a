package tdxmodule_test

import (
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxcall"
	. "github.com/tdxsim/tdxsim/tdxmodule"
)

// TestConcurrentBusy: two CPUs racing on one S-EPT entry, or a BLOCK (tree
// lock exclusive) against an AUG (tree lock shared), see TDX_OPERAND_BUSY
// with the operand that was busy, on some seeds and never a wrong state.
func TestConcurrentBusy(t *testing.T) {
	seen := map[Status]bool{}
	for seed := uint64(0); seed < 60; seed++ {
		f := newFx(t, Config{}).runnable()
		f.aug(0x200000, 0)
		f.septTo(0x400000, 0)
		p1, p2 := f.page(), f.page()
		s := sched.New(sched.Deterministic, seed, nil)
		var a, b, c Status
		s.Go("cpu0", func(th *sched.Thread) { a, _ = tdxcall.MemPageAug(f.m, th, f.tdr, 0x400000, 0, p1) })
		s.Go("cpu1", func(th *sched.Thread) { b, _ = tdxcall.MemPageAug(f.m, th, f.tdr, 0x400000, 0, p2) })
		s.Go("cpu2", func(th *sched.Thread) { c, _ = tdxcall.MemRangeBlock(f.m, th, f.tdr, 0x200000, 0) })
		if err := s.Run(); err != nil {
			t.Fatal(err)
		}
		for _, st := range []Status{a, b, c} {
			seen[st] = true
			switch st {
			case Success, OperandBusy.With(OpRCX), OperandBusy.With(OpSEPTTree), EPTEntryStateIncorrect.With(OpRCX):
			default:
				t.Fatalf("seed %d: unexpected %v", seed, st)
			}
		}
		if a == Success && b == Success {
			t.Fatalf("seed %d: both AUGs of one entry succeeded", seed)
		}
		if _, st := f.state(0x400000); (a == Success || b == Success) != (st == SeptPending) {
			t.Fatalf("seed %d: entry %s after AUGs %v / %v", seed, SeptStateName(st), a, b)
		}
	}
	for _, st := range []Status{OperandBusy.With(OpRCX), OperandBusy.With(OpSEPTTree), EPTEntryStateIncorrect.With(OpRCX)} {
		if !seen[st] {
			t.Errorf("no seed produced %v", st)
		}
	}
}

// TestParallelSEAMCALLs runs SEAMCALLs from real goroutines (go test -race).
func TestParallelSEAMCALLs(t *testing.T) {
	f := newFx(t, Config{DynamicPAMT: true}).runnable()
	for i := 0; i < 4; i++ {
		f.septTo(addr.GPA(0x200000*(i+1)), 0)
	}
	pages := make([][]addr.PFN, 4)
	for i := range pages {
		for j := 0; j < 32; j++ {
			pages[i] = append(pages[i], f.page())
		}
	}
	s := sched.New(sched.Parallel, 0, nil)
	for i := 0; i < 4; i++ {
		s.Go("cpu", func(th *sched.Thread) {
			for j, p := range pages[i] {
				g := addr.GPA(0x200000*(i+1) + j*0x1000)
				if st, _ := tdxcall.MemPageAug(f.m, th, f.tdr, g, 0, p); st != Success {
					t.Errorf("AUG %s: %v", g, st)
				}
				tdxcall.MemSEPTRd(f.m, th, f.tdr, g, 0)
			}
		})
	}
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	if info, _ := f.m.TD(f.tdr); info.ChildCount != 6+1+5+uint64(len(f.sept))+128 {
		t.Fatalf("CHLDCNT %d", info.ChildCount)
	}
}
