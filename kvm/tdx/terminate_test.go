package tdx_test

import (
	"testing"

	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/sched"
)

// KVM_TDX_TERMINATE_VM first: tdx_mmu_release_hkid() (VP.FLUSH,
// VPFLUSHDONE, CACHE.WB per package, KEY.FREEID) runs before any
// TDH.PHYMEM.PAGE.RECLAIM, and the guest_memfd's zap then reclaims every
// private leaf with no BLOCK, TRACK, REMOVE or WBINVD. Series: "[PATCH
// v5] KVM: TDX: Add sub-ioctl KVM_TDX_TERMINATE_VM"
// (20250718181541.98146-1-seanjc@google.com), the is_hkid_assigned()
// branch of tdx_sept_remove_private_spte().
func TestTerminateVMReclaimsWithoutRemove(t *testing.T) {
	for _, pin := range []bool{false, true} {
		e := runClean(t, opts{seed: 3, dynamic: true, record: true, terminate: true, pin: pin}, func(th *sched.Thread, e *env) {
			acceptAndShare(t, th, e)
			e.teardown(th)
		})
		var terminated, freed bool
		reclaims := 0
		for _, ev := range e.rec.Events() {
			switch ev.Name {
			case "KVM_TDX_TERMINATE_VM":
				terminated = true
			case "TDH.MNG.KEY.FREEID":
				if !terminated {
					t.Errorf("pin=%v: KEY.FREEID before KVM_TDX_TERMINATE_VM", pin)
				}
				freed = true
			case "TDH.PHYMEM.PAGE.RECLAIM":
				if !freed {
					t.Fatalf("pin=%v: RECLAIM before the HKID was freed", pin)
				}
				reclaims++
			case "TDH.MEM.RANGE.BLOCK", "TDH.MEM.TRACK", "TDH.MEM.PAGE.REMOVE", "TDH.PHYMEM.PAGE.WBINVD":
				if terminated {
					t.Errorf("pin=%v: %s after KVM_TDX_TERMINATE_VM", pin, ev.Name)
				}
			}
		}
		s := e.td.Stats()
		if s.PrivateReclaimed[0] != 256 || s.PagesRemoved != 0 || s.Leaked != 0 || s.PagesPinned != 0 {
			t.Errorf("pin=%v: reclaimed %v, removed %d, leaked %d, pinned %d; want 256 4K reclaimed, nothing removed, leaked or pinned",
				pin, s.PrivateReclaimed, s.PagesRemoved, s.Leaked, s.PagesPinned)
		}
		if reclaims < 256 {
			t.Errorf("pin=%v: %d RECLAIMs, want at least the 256 private pages", pin, reclaims)
		}
	}
}

// Without the sub-command in the tree, KVM_TDX_TERMINATE_VM is tdx_vm_ioctl's
// default case (EINVAL) and changes nothing; with it, the VM is dead
// (kvm_vm_dead) and a second call is EIO.
func TestTerminateVMErrnos(t *testing.T) {
	runClean(t, opts{seed: 5}, func(th *sched.Thread, e *env) {
		wantErrno(t, "no sub-command", e.td.TerminateVM(th), errno.EINVAL)
		if e.td.HKID() == 0 || e.m.VM.Dead() {
			t.Errorf("no sub-command changed the TD: HKID %d, dead %v", e.td.HKID(), e.m.VM.Dead())
		}
		e.teardown(th)
	})
	runClean(t, opts{seed: 5, terminate: true}, func(th *sched.Thread, e *env) {
		if err := e.td.TerminateVM(th); err != nil || e.td.HKID() != 0 || !e.m.VM.Dead() {
			t.Errorf("terminate: %v, HKID %d, dead %v", err, e.td.HKID(), e.m.VM.Dead())
		}
		wantErrno(t, "second terminate", e.td.TerminateVM(th), errno.EIO)
		_, err := e.td.Finalize(th)
		wantErrno(t, "KVM_TDX_FINALIZE_VM after KVM_TDX_TERMINATE_VM", err, errno.EIO)
		e.teardown(th)
	})
}
