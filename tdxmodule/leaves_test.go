package tdxmodule_test

import (
	"github.com/tdxsim/tdxsim/hostmem"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/tdxcall"
	. "github.com/tdxsim/tdxsim/tdxmodule"
)

func want(t *testing.T, what string, got, exp Status) {
	t.Helper()
	if got != exp {
		t.Errorf("%s = %v (0x%x), want %v", what, got, uint64(got), exp)
	}
}

func TestStatusString(t *testing.T) {
	for s, n := range map[Status]string{
		OperandBusy.With(OpRCX):       "TDX_OPERAND_BUSY(RCX)",
		OperandBusy.With(OpSEPTTree):  "TDX_OPERAND_BUSY(SEPT_TREE)",
		Success:                       "TDX_SUCCESS",
		TLBTrackingNotDone.With(0x92): "TDX_TLB_TRACKING_NOT_DONE(SEPT_TREE)",
		NoVCPUs:                       "TDX_NO_VCPUS",
		0xC0000B0800000092:            "TDX_TLB_TRACKING_NOT_DONE(SEPT_TREE)",
	} {
		if s.String() != n {
			t.Errorf("%x prints %q, want %q", uint64(s), s.String(), n)
		}
	}
	if uint64(OperandBusy.With(OpRCX)) != 0x8000020000000001 || !PageAlreadyAccepted.HasCode(PageAlreadyAccepted.With(1)) || PageAlreadyAccepted.IsError() {
		t.Fatal("encoding")
	}
}

func TestSEAMCALLRAXChecks(t *testing.T) {
	f := newFx(t, Config{})
	want(t, "bits 63:24", f.m.SEAMCALL(nil, Regs{RAX: 1 << 30}).Status(), OperandInvalid.With(OpRAX))
	want(t, "version on AUG", f.m.SEAMCALL(nil, Regs{RAX: uint64(LeafMemPageAug) | 1<<16}).Status(), OperandInvalid.With(OpRAX))
	want(t, "unknown leaf", f.m.SEAMCALL(nil, Regs{RAX: 63}).Status(), OperandInvalid.With(OpRAX))
	want(t, "PAMT.ADD without DPAMT", f.m.SEAMCALL(nil, Regs{RAX: uint64(LeafPhymemPAMTAdd)}).Status(), OperandInvalid.With(OpRAX))
}

func TestTDCreationLeaves(t *testing.T) {
	f := newFx(t, Config{HKIDs: 2, Packages: 2})
	tdr := f.page()
	want(t, "CREATE with the host KeyID 0", first(tdxcall.MngCreate(f.m, nil, tdr, 0)), OperandInvalid.With(OpRDX))
	want(t, "CREATE bad hkid", first(tdxcall.MngCreate(f.m, nil, tdr, 3)), OperandInvalid.With(OpRDX))
	st, _ := tdxcall.Call(f.m, nil, LeafMngCreate, Regs{RCX: uint64(tdr.HPA()) + 8, RDX: 1})
	want(t, "CREATE unaligned TDR", st, OperandInvalid.With(OpRCX))
	st, _ = tdxcall.Call(f.m, nil, LeafMngCreate, Regs{RCX: 1 << 40, RDX: 1})
	want(t, "CREATE beyond memory", st, OperandAddrRangeError.With(OpRCX))
	want(t, "CREATE", first(tdxcall.MngCreate(f.m, nil, tdr, 1)), Success)
	want(t, "CREATE same page", first(tdxcall.MngCreate(f.m, nil, tdr, 2)), PageMetadataIncorrect.With(OpRCX))
	want(t, "CREATE hkid in use", first(tdxcall.MngCreate(f.m, nil, f.page(), 1)), HKIDNotFree)
	want(t, "ADDCX before keys", first(tdxcall.MngAddCX(f.m, nil, tdr, f.page())), TDKeysNotConfigured)
	want(t, "KEY.CONFIG pkg 0", first(tdxcall.MngKeyConfig(f.m, nil, tdr, 0)), Success)
	want(t, "KEY.CONFIG pkg 0 again", first(tdxcall.MngKeyConfig(f.m, nil, tdr, 0)), KeyConfigured)
	want(t, "KEY.CONFIG pkg 5", first(tdxcall.MngKeyConfig(f.m, nil, tdr, 5)), OperandInvalid.With(OpR8))
	want(t, "KEY.CONFIG pkg 1", first(tdxcall.MngKeyConfig(f.m, nil, tdr, 1)), Success)
	want(t, "KEY.CONFIG after", first(tdxcall.MngKeyConfig(f.m, nil, tdr, 1)), LifecycleStateIncorrect)
	want(t, "INIT before TDCS", first(tdxcall.MngInit(f.m, nil, tdr, 4, 1)), TDCSNotAllocated)
	want(t, "TRACK before TDCS", first(tdxcall.MemTrack(f.m, nil, tdr)), TDCSNotAllocated)
	for i := 0; i < 6; i++ {
		want(t, "ADDCX", first(tdxcall.MngAddCX(f.m, nil, tdr, f.page())), Success)
	}
	want(t, "ADDCX 7th", first(tdxcall.MngAddCX(f.m, nil, tdr, f.page())), TDCXNumIncorrect)
	want(t, "ADDCX with TDR as TDCX", first(tdxcall.MngAddCX(f.m, nil, f.page(), tdr)), PageMetadataIncorrect.With(OpRDX))
	want(t, "TRACK before INIT", first(tdxcall.MemTrack(f.m, nil, tdr)), OpStateIncorrect)
	want(t, "VP.CREATE before INIT", first(tdxcall.VPCreate(f.m, nil, tdr, f.page())), OpStateIncorrect)
	want(t, "INIT levels 3", first(tdxcall.MngInit(f.m, nil, tdr, 3, 1)), OperandInvalid.With(OpR8))
	want(t, "INIT 0 vcpus", first(tdxcall.MngInit(f.m, nil, tdr, 4, 0)), OperandInvalid.With(OpR9))
	want(t, "INIT", first(tdxcall.MngInit(f.m, nil, tdr, 4, 1)), Success)
	want(t, "INIT again", first(tdxcall.MngInit(f.m, nil, tdr, 4, 1)), OpStateIncorrect)
	want(t, "FINALIZE no vCPU", first(tdxcall.MrFinalize(f.m, nil, tdr)), NoVCPUs)
	v := f.page()
	want(t, "VP.CREATE", first(tdxcall.VPCreate(f.m, nil, tdr, v)), Success)
	want(t, "VP.CREATE over max", first(tdxcall.VPCreate(f.m, nil, tdr, f.page())), MaxVCPUsExceeded)
	want(t, "VP.INIT without TDVPX", first(tdxcall.VPInit(f.m, nil, v)), TDCXNumIncorrect)
	for i := 0; i < 5; i++ {
		want(t, "VP.ADDCX", first(tdxcall.VPAddCX(f.m, nil, v, f.page())), Success)
	}
	want(t, "VP.ADDCX 6th", first(tdxcall.VPAddCX(f.m, nil, v, f.page())), VCPUStateIncorrect)
	want(t, "VP.ENTER before finalize", first(tdxcall.VPEnter(f.m, nil, v)), OpStateIncorrect)
	want(t, "VP.INIT", first(tdxcall.VPInit(f.m, nil, v)), Success)
	want(t, "VP.INIT twice", first(tdxcall.VPInit(f.m, nil, v)), VCPUStateIncorrect)
	want(t, "VP.INIT on TDR", first(tdxcall.VPInit(f.m, nil, tdr)), PageMetadataIncorrect.With(OpRCX))
	want(t, "FINALIZE", first(tdxcall.MrFinalize(f.m, nil, tdr)), Success)
	want(t, "FINALIZE twice", first(tdxcall.MrFinalize(f.m, nil, tdr)), OpStateIncorrect)
	if info, _ := f.m.TD(tdr); info.ChildCount != 6+1+5 || len(info.MRTD) != 48 || info.OpState != OpStateRunnable {
		t.Fatalf("TD info %+v", info)
	}
}

func TestTeardownLeaves(t *testing.T) {
	f := newFx(t, Config{Packages: 2}).runnable()
	p := f.aug(0x200000, 0)
	vc := f.enter()
	want(t, "VP.FLUSH inside", first(tdxcall.VPFlush(f.m, nil, f.vcpu)), VCPUStateIncorrect)
	want(t, "VPFLUSHDONE while inside", first(tdxcall.MngVPFlushDone(f.m, nil, f.tdr)), OperandBusy.With(OpRCX))
	f.m.TDExit(vc)
	want(t, "VPFLUSHDONE associated", first(tdxcall.MngVPFlushDone(f.m, nil, f.tdr)), FlushVPNotDone)
	want(t, "FREEID before flush", first(tdxcall.MngKeyFreeID(f.m, nil, f.tdr)), LifecycleStateIncorrect)
	want(t, "RECLAIM while keys live", first(tdxcall.PhymemPageReclaim(f.m, nil, p)), LifecycleStateIncorrect)
	want(t, "VP.FLUSH", first(tdxcall.VPFlush(f.m, nil, f.vcpu)), Success)
	want(t, "VP.FLUSH again", first(tdxcall.VPFlush(f.m, nil, f.vcpu)), VCPUNotAssociated)
	want(t, "CACHE.WB nothing", first(tdxcall.PhymemCacheWB(f.m, nil, 0)), NoHKIDReadyToWBCache)
	want(t, "VPFLUSHDONE", first(tdxcall.MngVPFlushDone(f.m, nil, f.tdr)), Success)
	st, _ := tdxcall.MemPageAug(f.m, nil, f.tdr, 0x400000, 0, f.page())
	want(t, "AUG after VPFLUSHDONE", st, TDKeysNotConfigured)
	want(t, "CACHE.WB pkg 0", first(tdxcall.PhymemCacheWB(f.m, nil, 0)), Success)
	want(t, "FREEID with pkg 1 pending", first(tdxcall.MngKeyFreeID(f.m, nil, f.tdr)), WBCacheNotComplete)
	want(t, "CACHE.WB pkg 1", first(tdxcall.PhymemCacheWB(f.m, nil, 1)), Success)
	want(t, "CACHE.WB resume", first(tdxcall.Call(f.m, nil, LeafPhymemCacheWB, Regs{RCX: 1})), WBCacheResumeError)
	want(t, "FREEID", first(tdxcall.MngKeyFreeID(f.m, nil, f.tdr)), Success)
	want(t, "RECLAIM TDR first", first(tdxcall.PhymemPageReclaim(f.m, nil, f.tdr)), TDAssociatedPagesExist)
	st, out := tdxcall.PhymemPageReclaim(f.m, nil, p)
	if st != Success || out.RCX != uint64(PTREG) || out.RDX != uint64(f.tdr.HPA()) || out.R8 != 0 {
		t.Fatalf("RECLAIM private page: %v %+v", st, out)
	}
	want(t, "RECLAIM twice", first(tdxcall.PhymemPageReclaim(f.m, nil, p)), PageMetadataIncorrect.With(OpRCX))
	// Reclaim everything else, TDR last.
	var rest []addr.PFN
	for _, sp := range f.sept {
		rest = append(rest, sp)
	}
	vc = f.m.VCPU(f.vcpu)
	rest = append(rest, vc.TDVPX()...)
	rest = append(rest, f.vcpu)
	rest = append(rest, f.tdcs...)
	for _, q := range rest {
		want(t, "RECLAIM", first(tdxcall.PhymemPageReclaim(f.m, nil, q)), Success)
	}
	want(t, "RECLAIM TDR", first(tdxcall.PhymemPageReclaim(f.m, nil, f.tdr)), Success)
	if _, ok := f.m.TD(f.tdr); ok {
		t.Fatal("TD still known after its TDR was reclaimed")
	}
	want(t, "HKID reusable", first(tdxcall.MngCreate(f.m, nil, f.page(), f.hkid)), Success)
}

func first(s Status, _ Regs) Status { return s }

func TestSEPTAddAndWalk(t *testing.T) {
	f := newFx(t, Config{}).initialized()
	p := f.page()
	st, out := tdxcall.MemSEPTAdd(f.m, nil, f.tdr, 0x40000000, 2, p)
	want(t, "SEPT.ADD L2 without L3", st, EPTWalkFailed.With(OpRCX))
	if out.RDX&7 != 3 || out.RCX != 1<<63 {
		t.Errorf("walk-failed outputs RCX %x RDX %x: want FREE entry at level 3", out.RCX, out.RDX)
	}
	st, _ = tdxcall.MemSEPTAdd(f.m, nil, f.tdr, 0x40000000|0x1000, 3, p)
	want(t, "SEPT.ADD unaligned GPA", st, OperandInvalid.With(OpRCX))
	st, _ = tdxcall.MemSEPTAdd(f.m, nil, f.tdr, 0, 0, p)
	want(t, "SEPT.ADD level 0", st, OperandInvalid.With(OpRCX))
	st, _ = tdxcall.MemSEPTAdd(f.m, nil, f.tdr, 1<<47, 3, p)
	want(t, "SEPT.ADD shared GPA", st, OperandInvalid.With(OpRCX))
	st, _ = tdxcall.MemSEPTAdd(f.m, nil, f.tdr, 0, 3, f.tdcs[0])
	want(t, "SEPT.ADD with a TDCX page", st, PageMetadataIncorrect.With(OpR8))
	// The call holds the TDR's PAMT entry shared, so offering the TDR
	// itself as the new page collides with its own lock.
	st, _ = tdxcall.MemSEPTAdd(f.m, nil, f.tdr, 0, 3, f.tdr)
	want(t, "SEPT.ADD with the TDR page", st, OperandBusy.With(OpR8))
	st, _ = tdxcall.MemSEPTAdd(f.m, nil, f.tdr, 0, 3, p)
	want(t, "SEPT.ADD L3", st, Success)
	st, _ = tdxcall.MemSEPTAdd(f.m, nil, f.tdr, 0, 3, f.page())
	want(t, "SEPT.ADD L3 again", st, EPTEntryStateIncorrect.With(OpRCX))
	st, _ = tdxcall.Call(f.m, nil, LeafMemSEPTAdd, Regs{RCX: 3, RDX: uint64(f.tdr.HPA()) | 1, R8: uint64(f.page().HPA())})
	want(t, "SEPT.ADD allow_existing", st, Success)
	st, _ = tdxcall.Call(f.m, nil, LeafMemSEPTAdd, Regs{RCX: 3, RDX: uint64(f.tdr.HPA()) | 2, R8: uint64(f.page().HPA())})
	want(t, "SEPT.ADD reserved RDX bits", st, OperandInvalid.With(OpRDX))
	st, out = tdxcall.MemSEPTRd(f.m, nil, f.tdr, 0, 3)
	if st != Success || out.RDX != 3|0x84<<8 {
		t.Errorf("SEPT.RD: %v RDX %x", st, out.RDX)
	}
}

func TestPageAddAndExtend(t *testing.T) {
	f := newFx(t, Config{}).initialized()
	src := f.page()
	f.septTo(0x1000, 0)
	st, _ := tdxcall.MemPageAdd(f.m, nil, f.tdr, 0x1000, f.page(), addr.PFN(1<<34))
	want(t, "PAGE.ADD source beyond memory", st, OperandInvalid.With(OpR9))
	st, _ = tdxcall.MemPageAdd(f.m, nil, f.tdr, 0x1000, f.tdcs[1], src)
	want(t, "PAGE.ADD onto a TDCX page", st, PageMetadataIncorrect.With(OpR8))
	st, _ = tdxcall.MemPageAdd(f.m, nil, f.tdr, 0x400000, f.page(), src)
	want(t, "PAGE.ADD without PT page", st, EPTWalkFailed.With(OpRCX))
	pg := f.page()
	st, _ = tdxcall.MemPageAdd(f.m, nil, f.tdr, 0x1000, pg, src)
	want(t, "PAGE.ADD", st, Success)
	st, _ = tdxcall.MemPageAdd(f.m, nil, f.tdr, 0x1000, f.page(), src)
	want(t, "PAGE.ADD again", st, EPTEntryStateIncorrect.With(OpRCX))
	st, _ = tdxcall.MrExtend(f.m, nil, f.tdr, 0x1080)
	want(t, "MR.EXTEND unaligned", st, OperandInvalid.With(OpRCX))
	st, _ = tdxcall.MrExtend(f.m, nil, f.tdr, 0x1100)
	want(t, "MR.EXTEND", st, Success)
	st, _ = tdxcall.MrExtend(f.m, nil, f.tdr, 0x2000)
	want(t, "MR.EXTEND on FREE 4K", st, EPTEntryNotPresent)
	st, _ = tdxcall.MrExtend(f.m, nil, f.tdr, 0x400000)
	want(t, "MR.EXTEND under missing PT", st, EPTEntryNotPresent.With(OpRCX))
	f.ok("FINALIZE", first(tdxcall.MrFinalize(f.m, nil, f.tdr)))
	st, _ = tdxcall.MemPageAdd(f.m, nil, f.tdr, 0x3000, f.page(), src)
	want(t, "PAGE.ADD after finalize", st, OpStateIncorrect)
	// A vCPU inside holds the TDR shared: an exclusive-TDR leaf is BUSY.
	f.enter()
	st, _ = tdxcall.MrExtend(f.m, nil, f.tdr, 0x1000)
	want(t, "MR.EXTEND while a vCPU runs", st, OperandBusy.With(OpRDX))
}

func TestAugAcceptBlockTrackRemove(t *testing.T) {
	f := newFx(t, Config{}).runnable()
	gpa := addr.GPA(0x600000)
	st, _ := tdxcall.MemPageAug(f.m, nil, f.tdr, gpa, 0, f.page())
	want(t, "AUG without PT page", st, EPTWalkFailed.With(OpRCX))
	f.septTo(gpa, 0)
	st, _ = tdxcall.MemPageAug(f.m, nil, f.tdr, gpa, 0, f.tdcs[0])
	want(t, "AUG onto a TDCX page", st, PageMetadataIncorrect.With(OpR8))
	st, _ = tdxcall.MemPageAug(f.m, nil, f.tdr, gpa|0x200, 0, f.page())
	want(t, "AUG bad page_info", st, OperandInvalid.With(OpRCX))
	st, _ = tdxcall.MemPageAug(f.m, nil, f.tdr, gpa, 2, f.page())
	want(t, "AUG 1G without the option", st, OperandInvalid.With(OpRCX))
	pg := f.aug(gpa, 0)
	st, _ = tdxcall.MemPageAug(f.m, nil, f.tdr, gpa, 0, f.page())
	want(t, "AUG twice", st, EPTEntryStateIncorrect.With(OpRCX))
	if _, s := f.state(gpa); s != SeptPending {
		t.Fatalf("after AUG: %s", SeptStateName(s))
	}
	vc := f.enter()
	if x, _ := f.m.Access(nil, vc, gpa, false, 0, false); x.Kind != ExitVE {
		t.Errorf("access to PENDING: %v, want #VE", x.Kind)
	}
	if x, _ := f.m.Access(nil, vc, gpa, false, 0, true); x.Kind != ExitEPTViolation || x.ExtQual != ExtQualPendingViolate {
		t.Errorf("access to PENDING with #VE disabled: %+v", x)
	}
	if x := f.m.Accept(nil, vc, uint64(gpa+0x1000)|1); x.Status != OperandInvalid.With(OpRCX) {
		t.Errorf("2M accept of an unaligned GPA: %v", x.Status)
	}
	if x := f.m.Accept(nil, vc, uint64(gpa&^0x1fffff)|1); x.Status != PageSizeMismatch.With(1) {
		t.Errorf("2M accept over a 4K-mapped range: %+v", x)
	}
	if x := f.m.Accept(nil, vc, uint64(gpa)); x.Status != Success {
		t.Fatalf("accept: %+v", x)
	}
	if x := f.m.Accept(nil, vc, uint64(gpa)); x.Status != PageAlreadyAccepted {
		t.Errorf("accept twice: %v", x.Status)
	}
	if x := f.m.Accept(nil, vc, uint64(gpa+0x1000)); x.Kind != ExitEPTViolation || x.ExtQual != ExtQualAccept || x.State != 0 {
		t.Errorf("accept of FREE: %+v (want EPT violation asking for AUG)", x)
	}
	// Zap: REMOVE before BLOCK, BLOCK, REMOVE before TRACK, TRACK with the
	// vCPU still inside from the old epoch, exit, TRACK, REMOVE.
	// Module: tdh_mem_page_remove.c: NOT_BLOCKED reports the entry
	// (set_arch_septe_details_in_vmm_regs); TLB_TRACKING_NOT_DONE, checked
	// after the PAMT entry is locked, leaves RCX/RDX at zero.
	st, out := tdxcall.MemPageRemove(f.m, nil, f.tdr, gpa, 0)
	want(t, "REMOVE unblocked", st, GPARangeNotBlocked.With(OpRCX))
	if out.RCX == 0 || out.RDX == 0 {
		t.Errorf("REMOVE unblocked: RCX %#x RDX %#x, want the SEPT entry and level/state", out.RCX, out.RDX)
	}
	st, _ = tdxcall.MemRangeBlock(f.m, nil, f.tdr, gpa, 0)
	want(t, "BLOCK", st, Success)
	if x, _ := f.m.Access(nil, vc, gpa, false, 0, false); x.Kind != ExitEPTViolation {
		t.Errorf("access to BLOCKED: %v", x.Kind)
	}
	st, _ = tdxcall.MemRangeBlock(f.m, nil, f.tdr, gpa, 0)
	want(t, "BLOCK twice", st, GPARangeAlreadyBlocked.With(OpRCX))
	st, out = tdxcall.MemPageRemove(f.m, nil, f.tdr, gpa, 0)
	want(t, "REMOVE untracked", st, TLBTrackingNotDone.With(OpRCX))
	if out.RCX != 0 || out.RDX != 0 {
		t.Errorf("REMOVE untracked: RCX %#x RDX %#x, want 0 and 0", out.RCX, out.RDX)
	}
	want(t, "TRACK", first(tdxcall.MemTrack(f.m, nil, f.tdr)), Success)
	want(t, "TRACK again with a vCPU of the old epoch inside", first(tdxcall.MemTrack(f.m, nil, f.tdr)), PreviousTLBEpochBusy)
	st, _ = tdxcall.MemPageRemove(f.m, nil, f.tdr, gpa, 0)
	want(t, "REMOVE while a vCPU of the blocking epoch runs", st, TLBTrackingNotDone.With(OpRCX))
	f.m.TDExit(vc)
	st, out = tdxcall.MemPageRemove(f.m, nil, f.tdr, gpa, 0)
	want(t, "REMOVE", st, Success)
	if addr.HPA(out.RCX) != pg.HPA() {
		t.Errorf("REMOVE returned %x, want %x", out.RCX, pg.HPA())
	}
	want(t, "WBINVD bad hkid", first(tdxcall.PhymemPageWBInvd(f.m, nil, pg, 0)), OperandInvalid.With(OpRCX))
	want(t, "WBINVD", first(tdxcall.PhymemPageWBInvd(f.m, nil, pg, f.hkid)), Success)
	want(t, "WBINVD of a TD page", first(tdxcall.PhymemPageWBInvd(f.m, nil, f.tdr, f.hkid)), PageMetadataIncorrect.With(OpRCX))
	st, _ = tdxcall.MemRangeUnblock(f.m, nil, f.tdr, gpa, 0)
	want(t, "UNBLOCK of FREE", st, EPTEntryStateIncorrect.With(OpRCX))
	if err := f.mem.Free(nil, pg, 1); err != nil {
		t.Fatalf("removed page does not go back to the host: %v", err)
	}
}

func TestHostCannotFreeAssignedPage(t *testing.T) {
	f := newFx(t, Config{}).runnable()
	pg := f.aug(0x200000, 0)
	if err := f.mem.Free(nil, pg, 1); err == nil {
		t.Fatal("a PT_REG page went back to the host")
	}
	if v := f.c.Violations(); len(v) != 1 || v[0].Name != hostmem.RuleFreeTDXOwned {
		t.Fatalf("violations %v", v)
	}
}

func TestUnblockNeedsTracking(t *testing.T) {
	f := newFx(t, Config{}).runnable()
	f.aug(0x200000, 0)
	st, _ := tdxcall.MemRangeBlock(f.m, nil, f.tdr, 0x200000, 0)
	want(t, "BLOCK", st, Success)
	vc := f.enter()
	st, _ = tdxcall.MemRangeUnblock(f.m, nil, f.tdr, 0x200000, 0)
	want(t, "UNBLOCK untracked", st, TLBTrackingNotDone.With(OpSEPTTree))
	f.m.TDExit(vc)
	want(t, "TRACK", first(tdxcall.MemTrack(f.m, nil, f.tdr)), Success)
	st, _ = tdxcall.MemRangeUnblock(f.m, nil, f.tdr, 0x200000, 0)
	want(t, "UNBLOCK", st, Success)
	if _, s := f.state(0x200000); s != SeptPending {
		t.Fatalf("after UNBLOCK: %s", SeptStateName(s))
	}
}

func TestHugeAugDemotePromote(t *testing.T) {
	for _, dpamt := range []bool{false, true} {
		f := newFx(t, Config{DynamicPAMT: dpamt}).runnable()
		gpa := addr.GPA(0x40000000)
		st, _ := tdxcall.MemPageAug(f.m, nil, f.tdr, gpa, 1, f.page())
		want(t, "2M AUG without PD", st, EPTWalkFailed.With(OpRCX))
		f.septTo(gpa, 1)
		st, _ = tdxcall.MemPageAug(f.m, nil, f.tdr, gpa, 1, f.page())
		want(t, "2M AUG of a 4K-aligned page", st, OperandInvalid.With(OpR8))
		big := f.aug(gpa, 1)
		vc := f.enter()
		// A 4K accept inside a 2M PENDING leaf asks the host to split.
		if x := f.m.Accept(nil, vc, uint64(gpa+0x3000)); x.Kind != ExitEPTViolation || x.ErrLevel != 1 || x.ReqLevel != 0 {
			t.Fatalf("4K accept in 2M pending: %+v", x)
		}
		f.m.TDExit(vc)
		np := f.page()
		var pair [2]addr.PFN
		if dpamt {
			pair = [2]addr.PFN{f.page(), f.page()}
		}
		st, _ = tdxcall.MemPageDemote(f.m, nil, f.tdr, gpa, 1, np, pair)
		want(t, "DEMOTE unblocked", st, GPARangeNotBlocked.With(OpRCX))
		tdxcall.MemRangeBlock(f.m, nil, f.tdr, gpa, 1)
		f.ok("TRACK", first(tdxcall.MemTrack(f.m, nil, f.tdr)))
		if dpamt {
			st, _ = tdxcall.MemPageDemote(f.m, nil, f.tdr, gpa, 1, np, [2]addr.PFN{pair[0], pair[0]})
			want(t, "DEMOTE same pair page twice", st, OperandInvalid.With(OpR13))
		}
		st, _ = tdxcall.MemPageDemote(f.m, nil, f.tdr, gpa, 1, np, pair)
		want(t, "DEMOTE", st, Success)
		if l, s := f.state(gpa + 0x3000); l != 0 || s != SeptPending {
			t.Fatalf("after DEMOTE: %s at %s", SeptStateName(s), l)
		}
		st, out := tdxcall.PhymemPageRdmd(f.m, nil, big+3)
		if st != Success || out.RCX != uint64(PTREG) || out.R8 != 0 {
			t.Fatalf("RDMD of a split page: %v %+v", st, out)
		}
		vc = f.enter()
		if x := f.m.Accept(nil, vc, uint64(gpa+0x3000)); x.Status != Success {
			t.Fatalf("4K accept after DEMOTE: %+v", x)
		}
		f.m.TDExit(vc)
		// PROMOTE needs uniform children: one is MAPPED, the rest PENDING.
		tdxcall.MemRangeBlock(f.m, nil, f.tdr, gpa, 1)
		f.ok("TRACK", first(tdxcall.MemTrack(f.m, nil, f.tdr)))
		st, _ = tdxcall.MemPagePromote(f.m, nil, f.tdr, gpa, 1)
		want(t, "PROMOTE mixed", st, EPTInvalidPromoteCondition.With(OpRCX))
		// Accept all the rest at 4K, then PROMOTE succeeds.
		tdxcall.MemRangeUnblock(f.m, nil, f.tdr, gpa, 1)
		vc = f.enter()
		for g := gpa; g < gpa+addr.Size2M; g += addr.PageSize {
			f.m.Accept(nil, vc, uint64(g))
		}
		f.m.TDExit(vc)
		tdxcall.MemRangeBlock(f.m, nil, f.tdr, gpa, 1)
		f.ok("TRACK", first(tdxcall.MemTrack(f.m, nil, f.tdr)))
		st, out = tdxcall.MemPagePromote(f.m, nil, f.tdr, gpa, 1)
		want(t, "PROMOTE", st, Success)
		if addr.HPA(out.RCX) != np.HPA() {
			t.Errorf("PROMOTE freed %x, want the demote page %x", out.RCX, np.HPA())
		}
		if l, s := f.state(gpa); l != 1 || s != SeptMapped {
			t.Fatalf("after PROMOTE: %s at %s", SeptStateName(s), l)
		}
		if dpamt && f.m.PAMT().Dynamic == 0 {
			t.Error("DPAMT: pairs of the control pages are expected to remain")
		}
	}
}

func TestSEPTRemove(t *testing.T) {
	f := newFx(t, Config{}).runnable()
	f.aug(0x200000, 0)
	tdxcall.MemRangeBlock(f.m, nil, f.tdr, 0, 1)
	f.ok("TRACK", first(tdxcall.MemTrack(f.m, nil, f.tdr)))
	st, _ := tdxcall.MemSEPTRemove(f.m, nil, f.tdr, 0, 1)
	want(t, "SEPT.REMOVE of a page with a leaf", st, EPTEntryStateIncorrect.With(OpRCX))
	st, _ = tdxcall.MemSEPTRemove(f.m, nil, f.tdr, 0x200000, 1)
	want(t, "SEPT.REMOVE unblocked", st, GPARangeNotBlocked.With(OpRCX))
	tdxcall.MemRangeBlock(f.m, nil, f.tdr, 0x200000, 1)
	f.ok("TRACK", first(tdxcall.MemTrack(f.m, nil, f.tdr)))
	st, _ = tdxcall.MemSEPTRemove(f.m, nil, f.tdr, 0x200000, 1)
	want(t, "SEPT.REMOVE non-empty", st, EPTPageNotFree.With(OpRCX))
}

func TestDynamicPAMTLeaves(t *testing.T) {
	f := newFx(t, Config{DynamicPAMT: true})
	p, _ := f.mem.Alloc(nil, hostmemReq(0))
	want(t, "MNG.CREATE without a pair", first(tdxcall.MngCreate(f.m, nil, p, 1)), MissingPAMTPagePair.With(OpRCX))
	a, _ := f.mem.Alloc(nil, hostmemReq(0))
	b, _ := f.mem.Alloc(nil, hostmemReq(0))
	want(t, "PAMT.ADD bad level", first(tdxcall.Call(f.m, nil, LeafPhymemPAMTAdd, Regs{RCX: uint64((p &^ 511).HPA()), RDX: uint64(a.HPA()), R8: uint64(b.HPA())})), OperandInvalid.With(OpRCX))
	want(t, "PAMT.ADD same page twice", first(tdxcall.PhymemPAMTAdd(f.m, nil, p, [2]addr.PFN{a, a})), PageNotFree.With(OpR8))
	want(t, "PAMT.ADD", first(tdxcall.PhymemPAMTAdd(f.m, nil, p, [2]addr.PFN{a, b})), Success)
	want(t, "PAMT.ADD again", first(tdxcall.PhymemPAMTAdd(f.m, nil, p, [2]addr.PFN{a, b})), HPARangeNotFree.With(OpRCX))
	if f.m.PAMT().Dynamic != 8192 {
		t.Errorf("dynamic PAMT %d", f.m.PAMT().Dynamic)
	}
	want(t, "MNG.CREATE with a donated page", first(tdxcall.MngCreate(f.m, nil, a, 1)), PageMetadataIncorrect.With(OpRCX))
	if err := f.mem.Free(nil, a, 1); err == nil {
		t.Error("a donated PAMT page went back to the host")
	}
	want(t, "MNG.CREATE", first(tdxcall.MngCreate(f.m, nil, p, 1)), Success)
	want(t, "PAMT.REMOVE in use", first(tdxcall.PhymemPAMTRemove(f.m, nil, p)), PAMTPageNotEmpty.With(uint32((p&511)/256)))
	q, _ := f.mem.Alloc(nil, hostmemReq(9))
	want(t, "PAMT.REMOVE without pair", first(tdxcall.PhymemPAMTRemove(f.m, nil, q)), NoPAMTPagePair.With(OpRCX))
	if got, wantB := f.m.PAMT().Static, StaticPAMTBytes(1<<30, true); got != wantB || wantB != 16+8192+32768 {
		t.Errorf("DPAMT static bytes %d, want %d", got, wantB)
	}
	if StaticPAMTBytes(1<<30, false) != 4202512 {
		t.Errorf("static PAMT per GiB %d, want 4202512 (§5.3)", StaticPAMTBytes(1<<30, false))
	}
}
