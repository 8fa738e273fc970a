package tdx

import (
	"fmt"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxcall"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// TerminateVM is KVM_TDX_TERMINATE_VM: userspace ends the TD before it
// drops its guest_memfd, so the HKID is released while the private pages
// are still mapped and the TD moves to TD_TEARDOWN, where the TDX module
// lets each page be reclaimed directly.
//
// Series: "[PATCH v5] KVM: TDX: Add sub-ioctl KVM_TDX_TERMINATE_VM"
// (20250718181541.98146-1-seanjc@google.com), applied to kvm-x86 as
// e4775f57ad51, dropped from the 6.17 VMX pull and reposted as patch 5
// of "[PATCH 0/5] KVM: Drop vm_dead, pivot on vm_bugged for -EIO"
// (20250729193341.621487-1-seanjc@google.com); no release read here
// carries it (kernel package, teardown behaviour). Kernel (as posted):
// tdx_terminate_vm(): kvm_trylock_all_vcpus() (-EBUSY when a vCPU's mutex
// is held; the model's teardown step runs alone with its vCPUs halted, so
// it always gets them), kvm_vm_dead() (every later VM and vCPU ioctl is
// EIO), then tdx_mmu_release_hkid(): TDH.VP.FLUSH of each vCPU,
// TDH.MNG.VPFLUSHDONE, TDH.PHYMEM.CACHE.WB on each package,
// TDH.MNG.KEY.FREEID (PreDestroyVM; a failure there leaks the HKID, and
// the private pages are then removed by nobody: the later zap bugs the
// VM). v5 also takes mmu_lock for write around the write-back and
// FREEID; lock waits are not modeled.
//
// Errors: a tree without the sub-command (Config.TerminateVM off: EINVAL,
// tdx_vm_ioctl's default case); a dead VM (EIO).
func (td *TD) TerminateVM(t *sched.Thread) error {
	const op = "KVM_TDX_TERMINATE_VM"
	if !td.cfg.TerminateVM {
		return errno.New(op, errno.EINVAL, "unknown KVM_MEMORY_ENCRYPT_OP sub-command (this tree has no KVM_TDX_TERMINATE_VM)")
	}
	unlock, err := td.guard(t, op)
	if err != nil {
		return err
	}
	defer unlock()
	td.vm.MarkDead(t, op)
	td.event(t, op, uint64(td.hkid), 0, 0, "")
	td.PreDestroyVM(t)
	return nil
}

// reclaimPrivate is tdx_sept_remove_private_spte() once the HKID is
// released: no BLOCK, TRACK, REMOVE or WBINVD (the whole cache was
// written back for the key), just TDH.PHYMEM.PAGE.RECLAIM of the leaf,
// then tdx_clear_page() (the reset back to ordinary memory), the unpin of
// the pin_private_pages design, and for a 4K leaf the Dynamic PAMT put.
//
// Series: "[PATCH v5] KVM: TDX: Add sub-ioctl KVM_TDX_TERMINATE_VM" (the
// is_hkid_assigned() branch: KVM_BUG_ON(!kvm->vm_dead), tdx_reclaim_page(),
// tdx_unpin() on success); a huge leaf is reclaimed in one call at its
// size and the PAMT put follows, as in "[RFC PATCH v2 05/23] x86/tdx:
// Enhance tdh_phymem_page_reclaim() to support huge pages"
// (20250807094228.4509-1-yan.y.zhao@intel.com), the huge-page series on a
// tree that had the ioctl.
//
// A failed RECLAIM is tdx_reclaim_page()'s WARN and -EIO: the page is not
// cleared, not unpinned and not put; it stays the module's, is counted in
// Stats.Leaked (one per 4K page), and the MMU's KVM_BUG_ON(ret) of that
// tree (tdp_mmu.c remove_external_spte()) kills the VM. guest_memfd then
// frees a page the module still holds, which the host allocator refuses:
// it leaks, on purpose.
func (td *TD) reclaimPrivate(t *sched.Thread, gfn addr.GFN, level addr.Level, pfn addr.PFN) error {
	h := td.h
	if !td.vm.Dead() {
		return td.vm.Bug(t, "tdx_sept_remove_private_spte: HKID released but the VM is not dead")
	}
	st, _ := tdxcall.PhymemPageReclaim(h.Mod, t, pfn) // the module reclaims the leaf at its size (R8)
	if st != tdxmodule.Success {
		td.leak(int64(level.Pages()))
		h.warn(t, "TDH.PHYMEM.PAGE.RECLAIM", st, pfn)
		return td.vm.Bug(t, fmt.Sprintf("tdx_sept_remove_private_spte: TDH.PHYMEM.PAGE.RECLAIM failed at %s: %v (page leaked)", gfn.GPA(), st))
	}
	td.releasePrivate(t, level, pfn)
	td.stats.PrivateReclaimed[level].Add(1)
	return nil
}
