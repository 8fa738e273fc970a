package inject

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// Every modelled leaf has a row of the contender table that names the
// module source and the locks it takes, and either contenders (with the
// operand id of each one's BUSY) or the kernel code that rules them out.
func TestEveryLeafIsClassified(t *testing.T) {
	for _, l := range tdxmodule.Leaves() {
		c := ContentionOf(l)
		if c.Leaf != l {
			t.Errorf("%v: no row in the contender table", l)
			continue
		}
		if !strings.HasSuffix(strings.Fields(c.Module)[0], ".c") || c.Locks == "" || c.Kernel == "" {
			t.Errorf("%v: row %+v lacks the module source, the locks or the kernel's reason", l, c)
		}
		if len(c.Operands) != len(c.Kinds) {
			t.Errorf("%v: %d contenders, %d operand ids", l, len(c.Kinds), len(c.Operands))
		}
	}
	if got := len(ContentionTable()); got != len(tdxmodule.Leaves()) {
		t.Errorf("table has %d rows, want one per leaf (%d)", got, len(tdxmodule.Leaves()))
	}
}

// What the module's sources and the kernel's locking say, row by row.
func TestContenderKinds(t *testing.T) {
	for _, c := range []struct {
		leaf tdxmodule.Leaf
		want string
	}{
		{tdxmodule.LeafMngCreate, "none"},       // fresh TDR, KOT under tdx_lock
		{tdxmodule.LeafPhymemPageReclm, "none"}, // teardown: nothing else holds the page or its TDR
		{tdxmodule.LeafMngKeyFreeID, "none"},
		{tdxmodule.LeafMemPageAdd, "none"}, // build ioctls are fully serialized
		{tdxmodule.LeafMrExtend, "none"},
		{tdxmodule.LeafPhymemPageWBInvd, "none"},
		{tdxmodule.LeafMemTrack, "epoch"},
		{tdxmodule.LeafMemRangeBlock, "vcpu"},
		{tdxmodule.LeafMemPageRemove, "vcpu"},
		{tdxmodule.LeafMemPageAug, "vcpu+host_seamcall"},
		{tdxmodule.LeafMemSEPTAdd, "vcpu+host_seamcall"},
		{tdxmodule.LeafVPEnter, "epoch+host_seamcall"},
		{tdxmodule.LeafPhymemPAMTAdd, "host_seamcall"},
	} {
		if got := ContentionOf(c.leaf).KindNames(); got != c.want {
			t.Errorf("%v: contenders %s, want %s", c.leaf, got, c.want)
		}
	}
}

// At rate 1 a leaf without contender never gets BUSY (the draws are
// counted as BusyNoContender); a leaf with contenders does, with the
// contender named in the Fault, its operand id in the status and the count
// in BusyByContender.
func TestRateOnlyWhereAContenderExists(t *testing.T) {
	for _, c := range ContentionTable() {
		in := New(Config{Seed: 5, Busy: 1})
		f := in.Decide(c.Leaf, tdxmodule.Regs{RCX: 0x1000, RDX: 0x2000})
		st := in.Stats()
		if !c.Possible() {
			if f != nil || st.Busy != 0 || st.BusyNoContender != 1 {
				t.Errorf("%v (no contender): %v, stats %+v; want it to run", c.Leaf, f, st)
			}
			continue
		}
		if f == nil || !errors.Is(f, ErrBusy) || !f.Status.HasCode(tdxmodule.OperandBusy) || f.Contender == 0 {
			t.Errorf("%v (%s): %v, want an injected BUSY naming its contender", c.Leaf, c.KindNames(), f)
			continue
		}
		if f.Status.Operand() != operandOf(c, f.Contender) || st.BusyByContender[f.Contender.String()] != 1 || st.Busy != 1 {
			t.Errorf("%v: %v, stats %+v", c.Leaf, f, st)
		}
	}
}

// An explicit fail with TDX_OPERAND_BUSY still fires where no contender
// can exist, and is counted as a module bug; on a leaf with contenders it
// is not.
func TestFailBusyWithoutContenderIsAModuleBug(t *testing.T) {
	busy := func(l tdxmodule.Leaf) Failure {
		return Failure{Leaf: l, Nth: 1, Status: tdxmodule.OperandBusy}
	}
	in := New(Config{Fail: []Failure{busy(tdxmodule.LeafMngCreate), busy(tdxmodule.LeafMemPageAug)}})
	if f := in.Decide(tdxmodule.LeafMngCreate, tdxmodule.Regs{}); f == nil || !errors.Is(f, ErrLeafFailed) || f.Contender != 0 {
		t.Fatalf("fail BUSY on TDH.MNG.CREATE: %v, want it injected as a failure", f)
	}
	if f := in.Decide(tdxmodule.LeafMemPageAug, tdxmodule.Regs{}); f == nil {
		t.Fatal("fail BUSY on TDH.MEM.PAGE.AUG: not injected")
	}
	if st := in.Stats(); st.BusyModuleBug != 1 || st.Failed["TDH.MNG.CREATE TDX_OPERAND_BUSY"] != 1 {
		t.Errorf("stats %+v: want one module bug (the CREATE)", st)
	}
}

// Before TDH.MR.FINALIZE no vCPU has entered and the kernel serializes
// every SEAMCALL on the TD: the rate leaves its S-EPT leaves alone, and
// an explicit BUSY there is a module bug.
func TestNoContenderBeforeFinalize(t *testing.T) {
	const tdr = addr.PFN(0x40)
	runnable := false
	in := New(Config{Busy: 1, Fail: []Failure{{Leaf: tdxmodule.LeafMemRangeBlock, Nth: 1, Status: tdxmodule.OperandBusy}}})
	in.SetRunnable(func(p addr.PFN) bool { return p == tdr && runnable })
	aug := tdxmodule.Regs{RCX: 0x5000, RDX: uint64(tdr) << 12}
	if f := in.Decide(tdxmodule.LeafMemPageAug, aug); f != nil {
		t.Errorf("AUG before FINALIZE: %v, want it to run", f)
	}
	if f := in.Decide(tdxmodule.LeafMemRangeBlock, aug); f == nil {
		t.Error("fail BUSY on BLOCK before FINALIZE: not injected")
	}
	if st := in.Stats(); st.BusyModuleBug != 1 || st.BusyNoContender != 1 {
		t.Errorf("stats %+v", st)
	}
	runnable = true
	if f := in.Decide(tdxmodule.LeafMemPageAug, aug); f == nil {
		t.Error("AUG on a RUNNABLE TD at rate 1: no BUSY")
	}
}

// The kernel's retry of a call the rate made BUSY runs (the contender's
// SEAMCALL has returned); a different call, or a later one, may be BUSY
// again. Kernel: tdx_handle_ept_violation()'s local retry.
func TestRetryEndsHostContention(t *testing.T) {
	in := New(Config{Busy: 1})
	a := tdxmodule.Regs{RCX: 0x200000, RDX: 0x40000}
	b := tdxmodule.Regs{RCX: 0x400000, RDX: 0x40000}
	seq := []struct {
		regs tdxmodule.Regs
		busy bool
	}{{a, true}, {b, true}, {a, false}, {b, false}, {a, true}}
	for i, s := range seq {
		if f := in.Decide(tdxmodule.LeafMemPageAug, s.regs); (f != nil) != s.busy {
			t.Errorf("call %d: %v, want busy=%v", i, f, s.busy)
		}
	}
	if st := in.Stats(); st.BusyEndedByRetry != 2 || st.Busy != 3 {
		t.Errorf("stats %+v", st)
	}
}

// docs/faults.md carries the table: a row per leaf with its contenders
// and module source, as the code has them.
func TestFaultsDocMatchesTable(t *testing.T) {
	doc, err := os.ReadFile("../docs/faults.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ContentionTable() {
		row := "| " + c.Leaf.String() + " | " + c.KindNames() + " |"
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/faults.md has no row starting %q", row)
		}
		if !strings.Contains(string(doc), strings.Fields(c.Module)[0]) {
			t.Errorf("docs/faults.md does not cite %s for %v", c.Module, c.Leaf)
		}
	}
}
