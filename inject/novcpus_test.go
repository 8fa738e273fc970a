package inject

import (
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// Inside the kernel's tdh_do_no_vcpus() window no BUSY is injected on that
// TD's TRACK and S-EPT leaves (the contender, a vCPU, was kicked out);
// outside it, and on another TD, the BUSY still comes; a non-BUSY failure
// (a module bug) comes either way.
func TestBusyEndsWhenVCPUsAreKicked(t *testing.T) {
	const tdr, other = addr.PFN(0x1234), addr.PFN(0x5678)
	in := New(Config{Busy: 1, Fail: []Failure{{Leaf: tdxmodule.LeafMemPageRemove, Nth: 1, Every: 1, Status: tdxmodule.OperandInvalid}}})
	track := func(p addr.PFN) tdxmodule.Regs { return tdxmodule.Regs{RCX: uint64(p) << 12} }
	block := func(p addr.PFN) tdxmodule.Regs { return tdxmodule.Regs{RCX: 0x200000, RDX: uint64(p) << 12} }
	if f := in.Decide(tdxmodule.LeafMemTrack, track(tdr)); f == nil || !f.Status.HasCode(tdxmodule.OperandBusy) {
		t.Fatalf("outside the window: %v, want BUSY", f)
	}
	in.NoVCPUs(tdr, true)
	if f := in.Decide(tdxmodule.LeafMemTrack, track(tdr)); f != nil {
		t.Errorf("TRACK in the window: %v, want it to run", f)
	}
	if f := in.Decide(tdxmodule.LeafMemRangeBlock, block(tdr)); f != nil {
		t.Errorf("BLOCK in the window: %v, want it to run", f)
	}
	if f := in.Decide(tdxmodule.LeafMemTrack, track(other)); f == nil {
		t.Error("another TD's TRACK: no BUSY, want one")
	}
	if f := in.Decide(tdxmodule.LeafMemPageRemove, block(tdr)); f == nil || f.Status != tdxmodule.OperandInvalid {
		t.Errorf("a module-bug failure in the window: %v, want TDX_OPERAND_INVALID", f)
	}
	in.NoVCPUs(tdr, false)
	if f := in.Decide(tdxmodule.LeafMemTrack, track(tdr)); f == nil {
		t.Error("after the window: no BUSY")
	}
	if s := in.Stats(); s.BusyEndedByKick != 2 {
		t.Errorf("BusyEndedByKick %d, want 2", s.BusyEndedByKick)
	}
}
