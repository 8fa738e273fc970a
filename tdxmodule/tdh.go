package tdxmodule

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/sched"
)

// Typed wrappers over SEAMCALL, one per leaf, after the kernel's tdh_*()
// helpers in arch/x86/virt/vmx/tdx/tdx.c. Each returns the status and the
// output registers that leaf defines.

func (m *Module) call(t *sched.Thread, leaf Leaf, in Regs) (Status, Regs) {
	in.RAX = uint64(leaf)
	out := m.SEAMCALL(t, in)
	return Status(out.RAX), out
}

func pageInfo(gpa addr.GPA, level addr.Level) uint64 { return uint64(gpa) | uint64(level) }

// MngCreate is tdh_mng_create(): TDR page and HKID.
func (m *Module) MngCreate(t *sched.Thread, tdr addr.PFN, hkid int) Status {
	s, _ := m.call(t, LeafMngCreate, Regs{RCX: uint64(tdr.HPA()), RDX: uint64(hkid)})
	return s
}

// MngKeyConfig is tdh_mng_key_config() run on a CPU of package pkg.
func (m *Module) MngKeyConfig(t *sched.Thread, tdr addr.PFN, pkg int) Status {
	s, _ := m.call(t, LeafMngKeyConfig, Regs{RCX: uint64(tdr.HPA()), R8: uint64(pkg)})
	return s
}

// MngAddCX is tdh_mng_addcx().
func (m *Module) MngAddCX(t *sched.Thread, tdr, tdcx addr.PFN) Status {
	s, _ := m.call(t, LeafMngAddCX, Regs{RCX: uint64(tdcx.HPA()), RDX: uint64(tdr.HPA())})
	return s
}

// MngInit is tdh_mng_init() with the TD_PARAMS fields the model uses.
func (m *Module) MngInit(t *sched.Thread, tdr addr.PFN, eptLevels, maxVCPUs int) Status {
	s, _ := m.call(t, LeafMngInit, Regs{RCX: uint64(tdr.HPA()), R8: uint64(eptLevels), R9: uint64(maxVCPUs)})
	return s
}

// VPCreate is tdh_vp_create().
func (m *Module) VPCreate(t *sched.Thread, tdr, tdvpr addr.PFN) Status {
	s, _ := m.call(t, LeafVPCreate, Regs{RCX: uint64(tdvpr.HPA()), RDX: uint64(tdr.HPA())})
	return s
}

// VPAddCX is tdh_vp_addcx().
func (m *Module) VPAddCX(t *sched.Thread, tdvpr, tdvpx addr.PFN) Status {
	s, _ := m.call(t, LeafVPAddCX, Regs{RCX: uint64(tdvpx.HPA()), RDX: uint64(tdvpr.HPA())})
	return s
}

// VPInit is tdh_vp_init().
func (m *Module) VPInit(t *sched.Thread, tdvpr addr.PFN) Status {
	s, _ := m.call(t, LeafVPInit, Regs{RCX: uint64(tdvpr.HPA())})
	return s
}

// MemSEPTAdd is tdh_mem_sept_add().
func (m *Module) MemSEPTAdd(t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level, page addr.PFN) (Status, Regs) {
	return m.call(t, LeafMemSEPTAdd, Regs{RCX: pageInfo(gpa, level), RDX: uint64(tdr.HPA()), R8: uint64(page.HPA())})
}

// MemPageAdd is tdh_mem_page_add().
func (m *Module) MemPageAdd(t *sched.Thread, tdr addr.PFN, gpa addr.GPA, page, source addr.PFN) (Status, Regs) {
	return m.call(t, LeafMemPageAdd, Regs{RCX: pageInfo(gpa, 0), RDX: uint64(tdr.HPA()), R8: uint64(page.HPA()), R9: uint64(source.HPA())})
}

// MrExtend is tdh_mr_extend() of one 256-byte chunk.
func (m *Module) MrExtend(t *sched.Thread, tdr addr.PFN, gpa addr.GPA) (Status, Regs) {
	return m.call(t, LeafMrExtend, Regs{RCX: uint64(gpa), RDX: uint64(tdr.HPA())})
}

// MrFinalize is tdh_mr_finalize().
func (m *Module) MrFinalize(t *sched.Thread, tdr addr.PFN) Status {
	s, _ := m.call(t, LeafMrFinalize, Regs{RCX: uint64(tdr.HPA())})
	return s
}

// MemPageAug is tdh_mem_page_aug().
func (m *Module) MemPageAug(t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level, page addr.PFN) (Status, Regs) {
	return m.call(t, LeafMemPageAug, Regs{RCX: pageInfo(gpa, level), RDX: uint64(tdr.HPA()), R8: uint64(page.HPA())})
}

// MemRangeBlock is tdh_mem_range_block().
func (m *Module) MemRangeBlock(t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level) (Status, Regs) {
	return m.call(t, LeafMemRangeBlock, Regs{RCX: pageInfo(gpa, level), RDX: uint64(tdr.HPA())})
}

// MemRangeUnblock is TDH.MEM.RANGE.UNBLOCK.
func (m *Module) MemRangeUnblock(t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level) (Status, Regs) {
	return m.call(t, LeafMemRangeUnblock, Regs{RCX: pageInfo(gpa, level), RDX: uint64(tdr.HPA())})
}

// MemTrack is tdh_mem_track().
func (m *Module) MemTrack(t *sched.Thread, tdr addr.PFN) Status {
	s, _ := m.call(t, LeafMemTrack, Regs{RCX: uint64(tdr.HPA())})
	return s
}

// MemPageRemove is tdh_mem_page_remove(); the removed page is RCX.
func (m *Module) MemPageRemove(t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level) (Status, Regs) {
	return m.call(t, LeafMemPageRemove, Regs{RCX: pageInfo(gpa, level), RDX: uint64(tdr.HPA())})
}

// MemSEPTRemove is TDH.MEM.SEPT.REMOVE; the freed page is RCX.
func (m *Module) MemSEPTRemove(t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level) (Status, Regs) {
	return m.call(t, LeafMemSEPTRemove, Regs{RCX: pageInfo(gpa, level), RDX: uint64(tdr.HPA())})
}

// MemPageDemote is tdh_mem_page_demote(): a new S-EPT page and, with
// Dynamic PAMT when splitting 2M, the range's PAMT page pair.
func (m *Module) MemPageDemote(t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level, page addr.PFN, pair [2]addr.PFN) (Status, Regs) {
	return m.call(t, LeafMemPageDemote, Regs{RCX: pageInfo(gpa, level), RDX: uint64(tdr.HPA()), R8: uint64(page.HPA()),
		R12: uint64(pair[0].HPA()), R13: uint64(pair[1].HPA())})
}

// MemPagePromote is TDH.MEM.PAGE.PROMOTE.
func (m *Module) MemPagePromote(t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level) (Status, Regs) {
	return m.call(t, LeafMemPagePromote, Regs{RCX: pageInfo(gpa, level), RDX: uint64(tdr.HPA())})
}

// MemSEPTRd is TDH.MEM.SEPT.RD: RCX = entry, RDX = level_state.
func (m *Module) MemSEPTRd(t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level) (Status, Regs) {
	return m.call(t, LeafMemSEPTRd, Regs{RCX: pageInfo(gpa, level), RDX: uint64(tdr.HPA())})
}

// VPEnter is TDH.VP.ENTER; the vCPU is inside until TDExit.
func (m *Module) VPEnter(t *sched.Thread, tdvpr addr.PFN) Status {
	s, _ := m.call(t, LeafVPEnter, Regs{RCX: uint64(tdvpr.HPA())})
	return s
}

// VPFlush is tdh_vp_flush().
func (m *Module) VPFlush(t *sched.Thread, tdvpr addr.PFN) Status {
	s, _ := m.call(t, LeafVPFlush, Regs{RCX: uint64(tdvpr.HPA())})
	return s
}

// MngVPFlushDone is tdh_mng_vpflushdone().
func (m *Module) MngVPFlushDone(t *sched.Thread, tdr addr.PFN) Status {
	s, _ := m.call(t, LeafMngVPFlushDone, Regs{RCX: uint64(tdr.HPA())})
	return s
}

// PhymemCacheWB is tdh_phymem_cache_wb() on a CPU of package pkg.
func (m *Module) PhymemCacheWB(t *sched.Thread, pkg int) Status {
	s, _ := m.call(t, LeafPhymemCacheWB, Regs{R8: uint64(pkg)})
	return s
}

// MngKeyFreeID is tdh_mng_key_freeid().
func (m *Module) MngKeyFreeID(t *sched.Thread, tdr addr.PFN) Status {
	s, _ := m.call(t, LeafMngKeyFreeID, Regs{RCX: uint64(tdr.HPA())})
	return s
}

// PhymemPageReclaim is tdh_phymem_page_reclaim(): RCX type, RDX owner, R8 size.
func (m *Module) PhymemPageReclaim(t *sched.Thread, page addr.PFN) (Status, Regs) {
	return m.call(t, LeafPhymemPageReclm, Regs{RCX: uint64(page.HPA())})
}

// PhymemPageWBInvd is tdh_phymem_page_wbinvd_hkid().
func (m *Module) PhymemPageWBInvd(t *sched.Thread, page addr.PFN, hkid int) Status {
	s, _ := m.call(t, LeafPhymemPageWBInvd, Regs{RCX: uint64(page.HPA()) | uint64(hkid)<<hkidShift})
	return s
}

// PhymemPageRdmd is TDH.PHYMEM.PAGE.RDMD.
func (m *Module) PhymemPageRdmd(t *sched.Thread, page addr.PFN) (Status, Regs) {
	return m.call(t, LeafPhymemPageRdmd, Regs{RCX: uint64(page.HPA())})
}

// PhymemPAMTAdd is TDH.PHYMEM.PAMT.ADD for the 2M range holding base.
func (m *Module) PhymemPAMTAdd(t *sched.Thread, base addr.PFN, pair [2]addr.PFN) Status {
	s, _ := m.call(t, LeafPhymemPAMTAdd, Regs{RCX: uint64((base &^ 511).HPA()) | 1, RDX: uint64(pair[0].HPA()), R8: uint64(pair[1].HPA())})
	return s
}

// PhymemPAMTRemove is TDH.PHYMEM.PAMT.REMOVE; RDX/R8 = the released pair.
func (m *Module) PhymemPAMTRemove(t *sched.Thread, base addr.PFN) (Status, Regs) {
	return m.call(t, LeafPhymemPAMTRemove, Regs{RCX: uint64((base &^ 511).HPA()) | 1})
}

// VCPU returns the vCPU whose TDVPR is tdvpr, for guest-side calls.
func (m *Module) VCPU(tdvpr addr.PFN) *VCPU {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.vcpus[tdvpr]
}

// TDInfo is a read-only view of a TD's control state, for checks and reports.
type TDInfo struct {
	ID         uint16
	HKID       int
	Lifecycle  uint8
	OpState    uint8
	ChildCount uint64
	Epoch      uint64
	SEPTPages  int
	VCPUs      int
	MRTD       []byte // set at MR.FINALIZE
}

// TD returns the state of the TD whose TDR is tdr.
func (m *Module) TD(tdr addr.PFN) (TDInfo, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	td := m.tds[tdr]
	if td == nil {
		return TDInfo{}, false
	}
	return TDInfo{ID: td.id, HKID: td.hkid, Lifecycle: td.lifecycle, OpState: td.opState, ChildCount: td.chldcnt,
		Epoch: td.epoch, SEPTPages: td.septPages, VCPUs: len(td.vcpus), MRTD: append([]byte(nil), td.finalMRTD...)}, true
}

// SEPTEntry is a read-only view of one Secure EPT entry.
type SEPTEntry struct {
	Level addr.Level
	State uint8
	HPA   addr.HPA
}

// Lookup returns the entry the Secure EPT walk for gpa ends on (the leaf,
// or where it stopped), without locks: a checker's view.
func (m *Module) Lookup(tdr addr.PFN, gpa addr.GPA) (SEPTEntry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	td := m.tds[tdr]
	if td == nil || td.root == nil {
		return SEPTEntry{}, false
	}
	p, i, lvl := td.walk(gpa, 0)
	return SEPTEntry{Level: lvl, State: p.e[i].state(), HPA: p.e[i].hpa()}, true
}
