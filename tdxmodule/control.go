package tdxmodule

import (
	"encoding/binary"

	"github.com/tdxsim/tdxsim/addr"
)

func init() {
	register(LeafMngCreate, (*Module).mngCreate)
	register(LeafMngKeyConfig, (*Module).mngKeyConfig)
	register(LeafMngAddCX, (*Module).mngAddCX)
	register(LeafMngInit, (*Module).mngInit)
	register(LeafVPCreate, (*Module).vpCreate)
	register(LeafVPAddCX, (*Module).vpAddCX)
	register(LeafVPInit, (*Module).vpInit)
	register(LeafMrFinalize, (*Module).mrFinalize)
	register(LeafVPEnter, (*Module).vpEnter)
	register(LeafVPFlush, (*Module).vpFlush)
	register(LeafMngVPFlushDone, (*Module).mngVPFlushDone)
	register(LeafPhymemCacheWB, (*Module).phymemCacheWB)
	register(LeafMngKeyFreeID, (*Module).mngKeyFreeID)
	register(LeafMngKeyReclaimID, func(*Module, *lockset, Regs) Regs { return Regs{} })
	register(LeafPhymemPageReclm, (*Module).phymemPageReclaim)
	register(LeafPhymemPageRdmd, (*Module).phymemPageRdmd)
	register(LeafPhymemPageWBInvd, (*Module).phymemPageWBInvd)
}

// mngCreate is TDH.MNG.CREATE (leaf 9): RCX = TDR page, RDX = HKID.
// Source: tdh_mng_create.c. The TDR page becomes PT_TDR; the HKID must be a
// private KeyID free in the KOT (else TDX_HKID_NOT_FREE).
func (m *Module) mngCreate(ls *lockset, in Regs) Regs {
	pfn, st := m.hpaOperand(in.RCX, OpRCX, addr.PageSize)
	if st != Success {
		return fail(st)
	}
	hkid := int(in.RDX)
	if in.RDX >= uint64(len(m.kot)) || hkid < firstHKID {
		return fail(OperandInvalid.With(OpRDX))
	}
	e, n, st := m.want4KFree(ls, pfn, OpRCX)
	if st != Success {
		return fail(st)
	}
	if m.kot[hkid] != nil {
		return fail(HKIDNotFree)
	}
	m.nextID++
	td := &TD{id: m.nextID, tdr: pfn, hkid: hkid, lifecycle: LifecycleHKIDAssigned}
	assign4K(e, n, PTTDR, td.id)
	m.kot[hkid] = td
	m.tds[pfn] = td
	m.byID = append(m.byID, td)
	return Regs{}
}

// mngKeyConfig is TDH.MNG.KEY.CONFIG (leaf 8): RCX = TDR. It runs once on a
// CPU of each package; R8 names the package (the model's stand-in for the
// CPU the SEAMCALL executes on).
func (m *Module) mngKeyConfig(ls *lockset, in Regs) Regs {
	td, st := m.tdOperand(ls, in.RCX, OpRCX, true)
	if st != Success {
		return fail(st)
	}
	if in.R8 >= uint64(m.cfg.Packages) {
		return fail(OperandInvalid.With(OpR8))
	}
	if td.lifecycle != LifecycleHKIDAssigned {
		return fail(LifecycleStateIncorrect)
	}
	bit := uint64(1) << in.R8
	if td.keyPkgs&bit != 0 {
		return fail(KeyConfigured)
	}
	td.keyPkgs |= bit
	if td.keyPkgs == uint64(1)<<m.cfg.Packages-1 {
		td.lifecycle = LifecycleKeysConfigured
	}
	return Regs{}
}

// mngAddCX is TDH.MNG.ADDCX (leaf 1): RCX = TDCX page, RDX = TDR. The
// TDCS's third page becomes the Secure EPT root.
func (m *Module) mngAddCX(ls *lockset, in Regs) Regs {
	pfn, st := m.hpaOperand(in.RCX, OpRCX, addr.PageSize)
	if st != Success {
		return fail(st)
	}
	td, st := m.tdOperand(ls, in.RDX, OpRDX, true)
	if st != Success {
		return fail(st)
	}
	if td.lifecycle != LifecycleKeysConfigured {
		return fail(TDKeysNotConfigured)
	}
	if len(td.tdcx) >= m.cfg.TDCSPages {
		return fail(TDCXNumIncorrect)
	}
	e, n, st := m.want4KFree(ls, pfn, OpRCX)
	if st != Success {
		return fail(st)
	}
	assign4K(e, n, PTTDCX, td.id)
	td.tdcx = append(td.tdcx, pfn)
	td.chldcnt++
	return Regs{}
}

// mngInit is TDH.MNG.INIT (leaf 21): RCX = TDR. RDX would point at
// TD_PARAMS; the model takes the two fields it uses in registers: R8 = EPT
// levels (4 or 5, from EPTP_CONTROLS) and R9 = MAX_VCPUS.
func (m *Module) mngInit(ls *lockset, in Regs) Regs {
	td, st := m.tdOperand(ls, in.RCX, OpRCX, true)
	if st != Success {
		return fail(st)
	}
	if td.lifecycle != LifecycleKeysConfigured {
		return fail(TDKeysNotConfigured)
	}
	if len(td.tdcx) < m.cfg.TDCSPages {
		return fail(TDCSNotAllocated)
	}
	if td.opState != OpStateUninitialized {
		return fail(OpStateIncorrect)
	}
	switch in.R8 {
	case 4:
		td.pwl, td.sharedBit = 3, sharedBit48
	case 5:
		td.pwl, td.sharedBit = 4, sharedBit52
	default:
		return fail(OperandInvalid.With(OpR8))
	}
	if in.R9 == 0 || in.R9 > 0xffff {
		return fail(OperandInvalid.With(OpR9))
	}
	td.maxVCPUs = int(in.R9)
	td.root = newSeptPage(td.pwl, td.tdcx[2].HPA())
	td.opState = OpStateInitialized
	td.epoch = 1
	td.mrtd = newSHA384()
	return Regs{}
}

// vpCreate is TDH.VP.CREATE (leaf 10): RCX = TDVPR page, RDX = TDR.
func (m *Module) vpCreate(ls *lockset, in Regs) Regs {
	pfn, st := m.hpaOperand(in.RCX, OpRCX, addr.PageSize)
	if st != Success {
		return fail(st)
	}
	td, st := m.tdPrologue(ls, in.RDX, OpRDX, false, opInit)
	if st != Success {
		return fail(st)
	}
	if len(td.vcpus) >= td.maxVCPUs {
		return fail(MaxVCPUsExceeded)
	}
	e, n, st := m.want4KFree(ls, pfn, OpRCX)
	if st != Success {
		return fail(st)
	}
	assign4K(e, n, PTTDVPR, td.id)
	v := &VCPU{td: td, tdvpr: pfn}
	td.vcpus = append(td.vcpus, v)
	m.vcpus[pfn] = v
	td.chldcnt++
	return Regs{}
}

func (m *Module) vcpuOperand(ls *lockset, v uint64, op uint32, excl bool) (*VCPU, Status) {
	pfn, st := m.typedOperand(ls, v, op, excl, PTTDVPR)
	if st != Success {
		return nil, st
	}
	return m.vcpus[pfn], Success
}

// vpAddCX is TDH.VP.ADDCX (leaf 4): RCX = TDVPX page, RDX = TDVPR.
func (m *Module) vpAddCX(ls *lockset, in Regs) Regs {
	pfn, st := m.hpaOperand(in.RCX, OpRCX, addr.PageSize)
	if st != Success {
		return fail(st)
	}
	vc, st := m.vcpuOperand(ls, in.RDX, OpRDX, true)
	if st != Success {
		return fail(st)
	}
	if vc.inited || len(vc.tdvpx) >= m.cfg.TDVPSPages-1 {
		return fail(VCPUStateIncorrect)
	}
	e, n, st := m.want4KFree(ls, pfn, OpRCX)
	if st != Success {
		return fail(st)
	}
	assign4K(e, n, PTTDCX, vc.td.id)
	vc.tdvpx = append(vc.tdvpx, pfn)
	vc.td.chldcnt++
	return Regs{}
}

// vpInit is TDH.VP.INIT (leaf 22): RCX = TDVPR. All TDVPX pages must have
// been added.
func (m *Module) vpInit(ls *lockset, in Regs) Regs {
	vc, st := m.vcpuOperand(ls, in.RCX, OpRCX, true)
	if st != Success {
		return fail(st)
	}
	if vc.td.opState != OpStateInitialized {
		return fail(OpStateIncorrect)
	}
	if vc.inited {
		return fail(VCPUStateIncorrect)
	}
	if len(vc.tdvpx) != m.cfg.TDVPSPages-1 {
		return fail(TDCXNumIncorrect)
	}
	vc.inited = true
	return Regs{}
}

// mrFinalize is TDH.MR.FINALIZE (leaf 17): RCX = TDR. Needs at least one
// vCPU (TDX_NO_VCPUS); computes MRTD; OP_STATE becomes RUNNABLE.
func (m *Module) mrFinalize(ls *lockset, in Regs) Regs {
	td, st := m.tdPrologue(ls, in.RCX, OpRCX, true, opInit)
	if st != Success {
		return fail(st)
	}
	if len(td.vcpus) == 0 {
		return fail(NoVCPUs)
	}
	td.finalMRTD = td.mrtd.Sum(nil)
	td.opState = OpStateRunnable
	return Regs{}
}

// vpEnter is TDH.VP.ENTER (leaf 0): RCX = TDVPR. The vCPU enters the TD and
// stays inside until TDExit; while inside it holds the TDR's PAMT lock
// shared, so leaves that lock the TDR exclusively get TDX_OPERAND_BUSY.
// Epoch: REFCOUNT[TD_EPOCH & 1]++ and VCPU_EPOCH = TD_EPOCH (§7).
func (m *Module) vpEnter(ls *lockset, in Regs) Regs {
	vc, st := m.vcpuOperand(ls, in.RCX, OpRCX, false)
	if st != Success {
		return fail(st)
	}
	td := vc.td
	if td.fatal {
		return fail(TDFatal)
	}
	if td.lifecycle != LifecycleKeysConfigured {
		return fail(TDKeysNotConfigured)
	}
	if td.opState != OpStateRunnable {
		return fail(OpStateIncorrect)
	}
	if !vc.inited || vc.inside {
		return fail(VCPUStateIncorrect)
	}
	tdrEnt, _ := m.leaf(td.tdr)
	if !vc.tdrHold.try(&tdrEnt.lock, false) {
		return fail(OperandBusy.With(OpTDR))
	}
	if td.epochLock&lockExcl != 0 {
		vc.tdrHold.release()
		return fail(OperandBusy.With(OpTDEpoch))
	}
	vc.associated, vc.inside = true, true
	vc.epoch = td.epoch
	td.refcount[td.epoch&1]++
	return Regs{}
}

// TDExit leaves the TD (any TD exit): REFCOUNT[VCPU_EPOCH & 1]-- and the
// TDR hold of VP.ENTER is dropped. It is the return of TDH.VP.ENTER, split
// off because the model runs guest work between the two.
func (m *Module) TDExit(v *VCPU) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !v.inside {
		return
	}
	v.inside = false
	v.td.refcount[v.epoch&1]--
	v.tdrHold.release()
}

// vpFlush is TDH.VP.FLUSH (leaf 18): RCX = TDVPR; dissociates the vCPU
// from its CPU. A vCPU inside the TD cannot be flushed.
func (m *Module) vpFlush(ls *lockset, in Regs) Regs {
	vc, st := m.vcpuOperand(ls, in.RCX, OpRCX, true)
	if st != Success {
		return fail(st)
	}
	if vc.inside {
		return fail(VCPUStateIncorrect)
	}
	if !vc.associated {
		return fail(VCPUNotAssociated)
	}
	vc.associated = false
	return Regs{}
}

// mngVPFlushDone is TDH.MNG.VPFLUSHDONE (leaf 19): RCX = TDR. No vCPU may be
// associated (TDX_FLUSHVP_NOT_DONE); lifecycle → BLOCKED; every package now
// owes a TDH.PHYMEM.CACHE.WB.
func (m *Module) mngVPFlushDone(ls *lockset, in Regs) Regs {
	td, st := m.tdOperand(ls, in.RCX, OpRCX, true)
	if st != Success {
		return fail(st)
	}
	if td.lifecycle != LifecycleKeysConfigured {
		return fail(LifecycleStateIncorrect)
	}
	for _, v := range td.vcpus {
		if v.associated {
			return fail(FlushVPNotDone)
		}
	}
	td.lifecycle = LifecycleBlocked
	td.wbPending = uint64(1)<<m.cfg.Packages - 1
	return Regs{}
}

// phymemCacheWB is TDH.PHYMEM.CACHE.WB (leaf 40): RCX = 0 (start) or 1
// (resume); R8 = the package it runs on (model). Clears that package's
// pending write-back for every flushed HKID.
func (m *Module) phymemCacheWB(ls *lockset, in Regs) Regs {
	if in.RCX > 1 {
		return fail(OperandInvalid.With(OpRCX))
	}
	if in.RCX == 1 {
		return fail(WBCacheResumeError) // the model never interrupts a WB
	}
	if in.R8 >= uint64(m.cfg.Packages) {
		return fail(OperandInvalid.With(OpR8))
	}
	bit := uint64(1) << in.R8
	did := false
	for _, td := range m.kot {
		if td != nil && td.lifecycle == LifecycleBlocked && td.wbPending&bit != 0 {
			td.wbPending &^= bit
			did = true
		}
	}
	if !did {
		return fail(NoHKIDReadyToWBCache)
	}
	return Regs{}
}

// mngKeyFreeID is TDH.MNG.KEY.FREEID (leaf 20): RCX = TDR. All packages
// must have written back (TDX_WBCACHE_NOT_COMPLETE); lifecycle → TEARDOWN
// and the HKID is free again.
func (m *Module) mngKeyFreeID(ls *lockset, in Regs) Regs {
	td, st := m.tdOperand(ls, in.RCX, OpRCX, true)
	if st != Success {
		return fail(st)
	}
	if td.lifecycle != LifecycleBlocked {
		return fail(LifecycleStateIncorrect)
	}
	if td.wbPending != 0 {
		return fail(WBCacheNotComplete)
	}
	td.lifecycle = LifecycleTeardown
	m.kot[td.hkid] = nil
	return Regs{}
}

// phymemPageReclaim is TDH.PHYMEM.PAGE.RECLAIM (leaf 28): RCX = HPA of any
// TD page (private page at its size, S-EPT, TDCX, TDVPR, TDR last). The
// owner must be in TEARDOWN; a TDR needs CHLDCNT == 0. Outputs RCX = page
// type, RDX = owner TDR, R8 = size.
func (m *Module) phymemPageReclaim(ls *lockset, in Regs) Regs {
	pfn, st := m.hpaOperand(in.RCX, OpRCX, addr.PageSize)
	if st != Success {
		return fail(st)
	}
	e, lvl := m.leaf(pfn)
	if !ls.try(&e.lock, true) {
		return fail(OperandBusy.With(OpRCX))
	}
	if e.pt == PTNDA || e.pt == PTRSVD || e.pt == PTPAMT {
		return fail(PageMetadataIncorrect.With(OpRCX))
	}
	owner := m.byID[e.owner]
	out := Regs{RCX: uint64(e.pt), RDX: uint64(owner.tdr.HPA()), R8: uint64(lvl)}
	if uint64(pfn)%lvl.Pages() != 0 {
		out.RAX = uint64(OperandInvalid.With(OpRCX))
		return out
	}
	if e.pt == PTTDR {
		if owner.lifecycle != LifecycleTeardown {
			out.RAX = uint64(LifecycleStateIncorrect)
			return out
		}
		if owner.chldcnt != 0 {
			out.RAX = uint64(TDAssociatedPagesExist)
			return out
		}
		m.forget(owner)
	} else {
		if !ls.try(&m.tdrEnt(owner).lock, false) {
			out.RAX = uint64(OperandBusy.With(OpTDR))
			return out
		}
		if owner.lifecycle != LifecycleTeardown {
			out.RAX = uint64(LifecycleStateIncorrect)
			return out
		}
		owner.chldcnt -= lvl.Pages()
		if e.pt == PTTDVPR {
			delete(m.vcpus, pfn)
		}
		if e.pt == PTEPT {
			owner.septPages--
		}
	}
	m.releaseLeaf(pfn, e, lvl)
	return out
}

func (m *Module) tdrEnt(td *TD) *pamtEnt {
	e, _ := m.leaf(td.tdr)
	return e
}

// releaseLeaf returns a PAMT leaf of any level to NDA.
func (m *Module) releaseLeaf(pfn addr.PFN, e *pamtEnt, lvl addr.Level) {
	e.pt, e.bepoch = PTNDA, 0
	if lvl == addr.Level4K {
		m.node2M(pfn).x.used--
	}
}

func (m *Module) forget(td *TD) {
	delete(m.tds, td.tdr)
	m.byID[td.id] = nil
}

// phymemPageRdmd is TDH.PHYMEM.PAGE.RDMD (leaf 24): RCX = HPA; returns the
// PAMT entry: RCX = type, RDX = owner TDR, R8 = level, R9 = BEPOCH.
func (m *Module) phymemPageRdmd(ls *lockset, in Regs) Regs {
	pfn, st := m.hpaOperand(in.RCX, OpRCX, addr.PageSize)
	if st != Success {
		return fail(st)
	}
	e, lvl := m.leaf(pfn)
	if !ls.try(&e.lock, false) {
		return fail(OperandBusy.With(OpRCX))
	}
	out := Regs{RCX: uint64(e.pt), R8: uint64(lvl)}
	if e.pt != PTNDA && int(e.owner) < len(m.byID) && m.byID[e.owner] != nil {
		out.RDX = uint64(m.byID[e.owner].tdr.HPA())
	}
	if e.pt == PTREG || e.pt == PTEPT {
		out.R9 = uint64(e.bepoch)
	}
	return out
}

// phymemPageWBInvd is TDH.PHYMEM.PAGE.WBINVD (leaf 41): RCX = HPA with the
// TD's HKID in the KeyID bits. The page must already be free in PAMT (after
// PAGE.REMOVE / SEPT.REMOVE). In Dynamic PAMT a freed page's range may have
// no 4K level; the model accepts an NDA leaf at any level [inf].
func (m *Module) phymemPageWBInvd(ls *lockset, in Regs) Regs {
	hkid := in.RCX >> hkidShift
	pa := in.RCX & (1<<hkidShift - 1)
	if hkid < firstHKID || hkid >= uint64(len(m.kot)) {
		return fail(OperandInvalid.With(OpRCX))
	}
	pfn, st := m.hpaOperand(pa, OpRCX, addr.PageSize)
	if st != Success {
		return fail(st)
	}
	e, _ := m.leaf(pfn)
	if !ls.try(&e.lock, false) {
		return fail(OperandBusy.With(OpRCX))
	}
	if e.pt != PTNDA {
		return fail(PageMetadataIncorrect.With(OpRCX))
	}
	return Regs{}
}

// mrtdBlock builds one 128-byte SHA-384 block header (§8): the API name,
// zero padded to 16 bytes, then the GPA little-endian, then zeros.
func mrtdBlock(name string, gpa addr.GPA) []byte {
	var b [128]byte
	copy(b[:16], name)
	binary.LittleEndian.PutUint64(b[16:24], uint64(gpa))
	return b[:]
}
