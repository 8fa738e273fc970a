// Package tdxcall is the host kernel's SEAMCALL wrappers, the tdh_*()
// functions of arch/x86/virt/vmx/tdx/tdx.c (with the Dynamic PAMT and
// huge-page series): one function per leaf, which puts the operands in the
// registers the leaf defines and makes the SEAMCALL on the TDX module. The
// module (package tdxmodule) only executes leaves; everything the kernel
// decides about a call (retries, what a status means) is its callers'
// (package kvm/tdx).
//
// Every wrapper has the kernel's return shape: the u64 status, and the
// output registers the leaf writes (the kernel's out pointers: ext_err1 and
// ext_err2 are RCX and RDX, tdh_phymem_page_reclaim()'s tdx_pt, tdx_owner
// and tdx_size are RCX, RDX and R8). Out.RAX repeats the status; a leaf
// with no outputs leaves the rest zero.
package tdxcall

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// Call makes one SEAMCALL of leaf with the operands in (RAX is set to the
// leaf, version 0) on the simulated CPU t (nil outside a scheduler).
// Kernel: seamcall_ret().
func Call(m *tdxmodule.Module, t *sched.Thread, leaf tdxmodule.Leaf, in tdxmodule.Regs) (tdxmodule.Status, tdxmodule.Regs) {
	in.RAX = uint64(leaf)
	out := m.SEAMCALL(t, in)
	return tdxmodule.Status(out.RAX), out
}

// pageInfo is the GPA|level operand of the TDH.MEM.* leaves.
func pageInfo(gpa addr.GPA, level addr.Level) uint64 { return uint64(gpa) | uint64(level) }

func hpa(p addr.PFN) uint64 { return uint64(p.HPA()) }

// MngCreate hands the module a TDR page and the TD's HKID.
// Kernel: tdh_mng_create().
func MngCreate(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN, hkid int) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafMngCreate, tdxmodule.Regs{RCX: hpa(tdr), RDX: uint64(hkid)})
}

// MngKeyConfig programs the TD's key on a CPU of package pkg (the model
// names the package in R8; the kernel runs it on a CPU there).
// Kernel: tdh_mng_key_config().
func MngKeyConfig(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN, pkg int) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafMngKeyConfig, tdxmodule.Regs{RCX: hpa(tdr), R8: uint64(pkg)})
}

// MngAddCX adds a TDCS page. Kernel: tdh_mng_addcx().
func MngAddCX(m *tdxmodule.Module, t *sched.Thread, tdr, tdcx addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafMngAddCX, tdxmodule.Regs{RCX: hpa(tdcx), RDX: hpa(tdr)})
}

// MngInit initialises the TD with the TD_PARAMS fields the model uses (EPT
// levels in R8, MAX_VCPUS in R9, where the kernel passes TD_PARAMS' HPA).
// Kernel: tdh_mng_init().
func MngInit(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN, eptLevels, maxVCPUs int) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafMngInit, tdxmodule.Regs{RCX: hpa(tdr), R8: uint64(eptLevels), R9: uint64(maxVCPUs)})
}

// VPCreate creates a vCPU in its TDVPR page. Kernel: tdh_vp_create().
func VPCreate(m *tdxmodule.Module, t *sched.Thread, tdr, tdvpr addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafVPCreate, tdxmodule.Regs{RCX: hpa(tdvpr), RDX: hpa(tdr)})
}

// VPAddCX adds a TDVPX page to a vCPU. Kernel: tdh_vp_addcx().
func VPAddCX(m *tdxmodule.Module, t *sched.Thread, tdvpr, tdvpx addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafVPAddCX, tdxmodule.Regs{RCX: hpa(tdvpx), RDX: hpa(tdvpr)})
}

// VPInit initialises a vCPU. Kernel: tdh_vp_init().
func VPInit(m *tdxmodule.Module, t *sched.Thread, tdvpr addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafVPInit, tdxmodule.Regs{RCX: hpa(tdvpr)})
}

// MemSEPTAdd adds an S-EPT page below the entry of gpa at level; on error
// RCX/RDX are the entry and its level_state. Kernel: tdh_mem_sept_add().
func MemSEPTAdd(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level, page addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafMemSEPTAdd, tdxmodule.Regs{RCX: pageInfo(gpa, level), RDX: hpa(tdr), R8: hpa(page)})
}

// MemPageAdd adds a 4K page at gpa during the build, copied from source.
// Kernel: tdh_mem_page_add().
func MemPageAdd(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN, gpa addr.GPA, page, source addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafMemPageAdd, tdxmodule.Regs{RCX: pageInfo(gpa, 0), RDX: hpa(tdr), R8: hpa(page), R9: hpa(source)})
}

// MrExtend extends MRTD with the 256-byte chunk at gpa.
// Kernel: tdh_mr_extend().
func MrExtend(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN, gpa addr.GPA) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafMrExtend, tdxmodule.Regs{RCX: uint64(gpa), RDX: hpa(tdr)})
}

// MrFinalize ends the build and computes MRTD. Kernel: tdh_mr_finalize().
func MrFinalize(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafMrFinalize, tdxmodule.Regs{RCX: hpa(tdr)})
}

// MemPageAug maps page PENDING at gpa, level. Kernel: tdh_mem_page_aug().
func MemPageAug(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level, page addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafMemPageAug, tdxmodule.Regs{RCX: pageInfo(gpa, level), RDX: hpa(tdr), R8: hpa(page)})
}

// MemRangeBlock blocks the entry of gpa at level.
// Kernel: tdh_mem_range_block().
func MemRangeBlock(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level) (tdxmodule.Status, tdxmodule.Regs) {
	return gpaCall(m, t, tdxmodule.LeafMemRangeBlock, tdr, gpa, level)
}

// MemRangeUnblock unblocks the entry of gpa at level.
// Module: tdh_mem_range_unblock() (the kernel has no wrapper).
func MemRangeUnblock(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level) (tdxmodule.Status, tdxmodule.Regs) {
	return gpaCall(m, t, tdxmodule.LeafMemRangeUnblock, tdr, gpa, level)
}

// MemTrack advances the TD's TLB epoch. Kernel: tdh_mem_track().
func MemTrack(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafMemTrack, tdxmodule.Regs{RCX: hpa(tdr)})
}

// MemPageRemove removes the leaf of gpa at level; RCX is the removed page
// (bit 62: its 2M range's 4K PAMT is now empty, Dynamic PAMT).
// Kernel: tdh_mem_page_remove().
func MemPageRemove(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level) (tdxmodule.Status, tdxmodule.Regs) {
	return gpaCall(m, t, tdxmodule.LeafMemPageRemove, tdr, gpa, level)
}

// MemSEPTRemove removes the S-EPT page below the entry of gpa at level;
// RCX is the freed page. Module: tdh_mem_sept_remove() (the kernel has no
// wrapper).
func MemSEPTRemove(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level) (tdxmodule.Status, tdxmodule.Regs) {
	return gpaCall(m, t, tdxmodule.LeafMemSEPTRemove, tdr, gpa, level)
}

// MemPageDemote splits the leaf of gpa at level into the new S-EPT page
// and, with Dynamic PAMT when splitting 2M, installs the range's PAMT page
// pair. Kernel: tdh_mem_page_demote() (the huge-page series).
func MemPageDemote(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level, page addr.PFN, pair [2]addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafMemPageDemote, tdxmodule.Regs{RCX: pageInfo(gpa, level), RDX: hpa(tdr), R8: hpa(page),
		R12: hpa(pair[0]), R13: hpa(pair[1])})
}

// MemPagePromote merges the 512 leaves below the entry of gpa at level;
// RCX is the freed S-EPT page, RDX/R8 the freed PAMT pair (Dynamic PAMT).
// Module: tdh_mem_page_promote() (the kernel has no wrapper).
func MemPagePromote(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level) (tdxmodule.Status, tdxmodule.Regs) {
	return gpaCall(m, t, tdxmodule.LeafMemPagePromote, tdr, gpa, level)
}

// MemSEPTRd reads the entry of gpa at level: RCX the entry, RDX its
// level_state. Module: tdh_mem_sept_rd() (the kernel has no wrapper).
func MemSEPTRd(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN, gpa addr.GPA, level addr.Level) (tdxmodule.Status, tdxmodule.Regs) {
	return gpaCall(m, t, tdxmodule.LeafMemSEPTRd, tdr, gpa, level)
}

// VPEnter enters the TD on vCPU tdvpr; it is inside until the module's
// TDExit. Kernel: tdh_vp_enter().
func VPEnter(m *tdxmodule.Module, t *sched.Thread, tdvpr addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafVPEnter, tdxmodule.Regs{RCX: hpa(tdvpr)})
}

// VPFlush dissociates a vCPU from its CPU. Kernel: tdh_vp_flush().
func VPFlush(m *tdxmodule.Module, t *sched.Thread, tdvpr addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafVPFlush, tdxmodule.Regs{RCX: hpa(tdvpr)})
}

// MngVPFlushDone ends the vCPU flushes before the HKID is released.
// Kernel: tdh_mng_vpflushdone().
func MngVPFlushDone(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafMngVPFlushDone, tdxmodule.Regs{RCX: hpa(tdr)})
}

// PhymemCacheWB writes back the caches of package pkg (named in R8).
// Kernel: tdh_phymem_cache_wb().
func PhymemCacheWB(m *tdxmodule.Module, t *sched.Thread, pkg int) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafPhymemCacheWB, tdxmodule.Regs{R8: uint64(pkg)})
}

// MngKeyFreeID frees the TD's HKID in the module.
// Kernel: tdh_mng_key_freeid().
func MngKeyFreeID(m *tdxmodule.Module, t *sched.Thread, tdr addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafMngKeyFreeID, tdxmodule.Regs{RCX: hpa(tdr)})
}

// PhymemPageReclaim takes a TD page back: RCX its page type, RDX the owner
// TDR, R8 its size. Kernel: tdh_phymem_page_reclaim().
func PhymemPageReclaim(m *tdxmodule.Module, t *sched.Thread, page addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafPhymemPageReclm, tdxmodule.Regs{RCX: hpa(page)})
}

// PhymemPageWBInvd writes back and invalidates page's cache lines under the
// TD's key. Kernel: tdh_phymem_page_wbinvd_hkid().
func PhymemPageWBInvd(m *tdxmodule.Module, t *sched.Thread, page addr.PFN, hkid int) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafPhymemPageWBInvd, tdxmodule.Regs{RCX: hpa(page) | uint64(hkid)<<tdxmodule.KeyIDShift})
}

// PhymemPageRdmd reads page's PAMT entry: RCX type, RDX owner TDR, R8
// level, R9 BEPOCH. Module: tdh_phymem_page_rdmd() (the kernel has no
// wrapper).
func PhymemPageRdmd(m *tdxmodule.Module, t *sched.Thread, page addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafPhymemPageRdmd, tdxmodule.Regs{RCX: hpa(page)})
}

// PhymemPAMTAdd installs the Dynamic PAMT page pair of the 2M range
// holding base. Kernel: tdh_phymem_pamt_add() (the Dynamic PAMT series).
func PhymemPAMTAdd(m *tdxmodule.Module, t *sched.Thread, base addr.PFN, pair [2]addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafPhymemPAMTAdd, tdxmodule.Regs{RCX: hpa(base&^511) | 1, RDX: hpa(pair[0]), R8: hpa(pair[1])})
}

// PhymemPAMTRemove removes the Dynamic PAMT page pair of the 2M range
// holding base; RDX/R8 are the released pages.
// Kernel: tdh_phymem_pamt_remove() (the Dynamic PAMT series).
func PhymemPAMTRemove(m *tdxmodule.Module, t *sched.Thread, base addr.PFN) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, tdxmodule.LeafPhymemPAMTRemove, tdxmodule.Regs{RCX: hpa(base&^511) | 1})
}

// gpaCall is the call shape of the leaves that name one S-EPT entry and
// nothing else: RCX the GPA and level (the kernel's gpa | level), RDX the
// TD's TDR.
func gpaCall(m *tdxmodule.Module, t *sched.Thread, leaf tdxmodule.Leaf, tdr addr.PFN, gpa addr.GPA, level addr.Level) (tdxmodule.Status, tdxmodule.Regs) {
	return Call(m, t, leaf, tdxmodule.Regs{RCX: pageInfo(gpa, level), RDX: hpa(tdr)})
}
