package tdxmodule_test

import (
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/tdxcall"
	. "github.com/tdxsim/tdxsim/tdxmodule"
)

// Module: tdh_mem_page_demote.c: with a host interrupt pending and nothing
// committed, DEMOTE returns TDX_INTERRUPTED_RESTARTABLE with RCX/RDX
// restored ("Restore the original RCX and RDX values and terminate the
// flow"); repeated whole, it succeeds. Modules that enumerate TDX_FEATURES0
// ENHANCED_DEMOTE_INTERRUPTIBILITY (bit 51) do not poll for a
// non-partitioned TD ("[PATCH v3 02/24] x86/virt/tdx: ... ENHANCED_DEMOTE_
// INTERRUPTIBILITY", 20260106101646.24809-1-yan.y.zhao@intel.com thread).
func TestDemoteInterruptedRestartable(t *testing.T) {
	for _, noEnh := range []bool{true, false} {
		f := newFx(t, Config{NoEnhancedDemote: noEnh}).runnable()
		if got := f.m.Config().Features0()&Features0EnhancedDemoteInterruptibility != 0; got == noEnh {
			t.Errorf("NoEnhancedDemote %v: FEATURES0 bit 51 = %v", noEnh, got)
		}
		gpa := addr.GPA(0x40000000)
		f.septTo(gpa, 1)
		f.aug(gpa, 1)
		tdxcall.MemRangeBlock(f.m, nil, f.tdr, gpa, 1)
		f.ok("TRACK", first(tdxcall.MemTrack(f.m, nil, f.tdr)))
		np := f.page()
		f.m.PendHostInterrupt()
		st, out := tdxcall.MemPageDemote(f.m, nil, f.tdr, gpa, 1, np, [2]addr.PFN{})
		if !noEnh {
			want(t, "DEMOTE with the feature, interrupt pending", st, Success)
			continue
		}
		want(t, "DEMOTE, interrupt pending", st, InterruptedRestartable)
		if out.RCX != uint64(gpa)|1 {
			t.Errorf("RCX %#x after INTERRUPTED_RESTARTABLE, want the input %#x", out.RCX, uint64(gpa)|1)
		}
		if l, s := f.state(gpa); l != 1 || !IsBlocked(s) {
			t.Errorf("interrupted DEMOTE changed the entry: %s at %s", SeptStateName(s), l)
		}
		st, _ = tdxcall.MemPageDemote(f.m, nil, f.tdr, gpa, 1, np, [2]addr.PFN{})
		want(t, "DEMOTE repeated", st, Success)
	}
}

// Module: tdg_mem_page_accept.c: a 2M accept polls
// is_interrupt_pending_guest_side() after each 4K page; interrupted, the
// entry stays PENDING with accept_counter saved and the vCPU exits; the
// re-executed TDCALL resumes from the counter and maps the 2M page. A
// REMOVE of the half-accepted page succeeds (sept_cleanup_if_pending).
func TestAccept2MResumable(t *testing.T) {
	f := newFx(t, Config{}).runnable()
	gpa := addr.GPA(0x40000000)
	f.aug(gpa, 1)
	vc := f.enter()
	f.m.PendGuestInterrupt(vc, 100)
	if x := f.m.Accept(nil, vc, uint64(gpa)|1); x.Kind != ExitInterrupt {
		t.Fatalf("2M accept with an interrupt due: %+v", x)
	}
	if l, s := f.state(gpa); l != 1 || s != SeptPending {
		t.Fatalf("after the interrupt: %s at %s, want PENDING at 2M", SeptStateName(s), l)
	}
	f.m.TDExit(vc)
	vc = f.enter()
	f.m.PendGuestInterrupt(vc, 400)
	if x := f.m.Accept(nil, vc, uint64(gpa)|1); x.Kind != ExitInterrupt {
		t.Fatalf("second interrupt: %+v", x)
	}
	f.m.TDExit(vc)
	vc = f.enter()
	if x := f.m.Accept(nil, vc, uint64(gpa)|1); x.Kind != ExitNone || x.Status != Success {
		t.Fatalf("resumed 2M accept: %+v", x)
	}
	if l, s := f.state(gpa); l != 1 || s != SeptMapped {
		t.Fatalf("after the resumed accept: %s at %s", SeptStateName(s), l)
	}
	f.m.TDExit(vc)

	// Interrupted, then removed: the counter goes with the entry.
	g2 := addr.GPA(0x40200000)
	f.aug(g2, 1)
	vc = f.enter()
	f.m.PendGuestInterrupt(vc, 7)
	if x := f.m.Accept(nil, vc, uint64(g2)|1); x.Kind != ExitInterrupt {
		t.Fatalf("interrupt: %+v", x)
	}
	f.m.TDExit(vc)
	tdxcall.MemRangeBlock(f.m, nil, f.tdr, g2, 1)
	f.ok("TRACK", first(tdxcall.MemTrack(f.m, nil, f.tdr)))
	st, _ := tdxcall.MemPageRemove(f.m, nil, f.tdr, g2, 1)
	want(t, "REMOVE of a half-accepted 2M page", st, Success)
}
