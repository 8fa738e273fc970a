package inject

import (
	"errors"
	"testing"

	"github.com/tdxsim/tdxsim/tdxmodule"
)

// The Nth call of a leaf fails, and every Every-th after it; other leaves
// and other calls run. The busy rate is a function of the seed and the
// call count only: two injectors with one seed decide alike.
func TestDecisions(t *testing.T) {
	in := New(Config{Seed: 7, Fail: []Failure{{Leaf: tdxmodule.LeafMemPageRemove, Nth: 2, Every: 3, Status: tdxmodule.OperandInvalid}}})
	var failed []int
	for k := 1; k <= 10; k++ {
		if st, ok := in.SEAMCALL(tdxmodule.LeafMemPageRemove, tdxmodule.Regs{}); ok {
			if st != tdxmodule.OperandInvalid {
				t.Fatalf("status %v", st)
			}
			failed = append(failed, k)
		}
		if _, ok := in.SEAMCALL(tdxmodule.LeafMemPageAug, tdxmodule.Regs{}); ok {
			t.Fatalf("AUG call %d failed", k)
		}
	}
	if want := []int{2, 5, 8}; len(failed) != 3 || failed[0] != 2 || failed[1] != 5 || failed[2] != 8 {
		t.Fatalf("failed calls %v, want %v", failed, want)
	}
	if got := in.Stats().Failed["TDH.MEM.PAGE.REMOVE TDX_OPERAND_INVALID"]; got != 3 {
		t.Fatalf("stats %v", in.Stats())
	}
	busy := func(seed uint64) (n int, pattern string) {
		b := New(Config{Seed: seed, Busy: 0.25, BusyLeaves: []tdxmodule.Leaf{tdxmodule.LeafMemPageAug}})
		for range 400 {
			_, ok := b.SEAMCALL(tdxmodule.LeafMemPageAug, tdxmodule.Regs{})
			if ok {
				n++
				pattern += "x"
			} else {
				pattern += "."
			}
			if _, ok := b.SEAMCALL(tdxmodule.LeafMemTrack, tdxmodule.Regs{}); ok {
				t.Fatal("busy on a leaf not listed")
			}
		}
		return n, pattern
	}
	n1, p1 := busy(1)
	n2, p2 := busy(1)
	_, p3 := busy(2)
	if p1 != p2 || p1 == p3 || n1 < 60 || n1 > 140 || n2 != n1 {
		t.Fatalf("busy: %d of 400 (want about 100), same seed alike %v, other seed differs %v", n1, p1 == p2, p1 != p3)
	}
}

func TestAllocAndParse(t *testing.T) {
	in := New(Config{AllocFail: []AllocFailure{{Source: "kvm.mmu_shadow_page_cache", Nth: 3}, {Nth: 10}}})
	var failed []int
	for k := 1; k <= 12; k++ {
		src := "buddy"
		if k%2 == 0 {
			src = "kvm.mmu_shadow_page_cache"
		}
		if err := in.Alloc(src, 0); err != nil {
			if !errors.Is(err, ErrAllocFailed) {
				t.Fatalf("allocation %d failed with %v, want ErrAllocFailed", k, err)
			}
			failed = append(failed, k)
		}
	}
	// The 3rd shadow-page allocation is the 6th overall; the 10th overall
	// fails too.
	if len(failed) != 2 || failed[0] != 6 || failed[1] != 10 {
		t.Fatalf("failed allocations %v, want [6 10]", failed)
	}
	if l, err := ParseLeaf("TDH.MEM.PAGE.DEMOTE"); err != nil || l != tdxmodule.LeafMemPageDemote {
		t.Fatal(l, err)
	}
	if _, err := ParseLeaf("TDH.NOPE"); err == nil {
		t.Fatal("unknown leaf accepted")
	}
	for _, s := range []string{"TDX_OPERAND_BUSY", "OPERAND_BUSY", "0x8000020000000000"} {
		if st, err := ParseStatus(s); err != nil || st.Code() != tdxmodule.OperandBusy.Code() {
			t.Fatalf("%s: %v %v", s, st, err)
		}
	}
	if _, err := ParseStatus("TDX_NOPE"); err == nil {
		t.Fatal("unknown status accepted")
	}
}

func TestDecideNamesTheFault(t *testing.T) {
	in := New(Config{Busy: 1, Fail: []Failure{{Leaf: tdxmodule.LeafMemPageDemote, Nth: 1, Status: tdxmodule.OperandInvalid}}})
	f := in.Decide(tdxmodule.LeafMemPageDemote, tdxmodule.Regs{})
	if f == nil || !errors.Is(f, ErrLeafFailed) || errors.Is(f, ErrBusy) || f.Status != tdxmodule.OperandInvalid {
		t.Fatalf("fail entry: %v", f)
	}
	f = in.Decide(tdxmodule.LeafMemPageDemote, tdxmodule.Regs{})
	if f == nil || !errors.Is(f, ErrBusy) || !f.Status.HasCode(tdxmodule.OperandBusy) || f.Contender != ContenderVCPU {
		t.Fatalf("busy: %v", f)
	}
}
