package tdx

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/internal/mutation"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxcall"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// VCPUState is a vCPU's TDX state (enum vcpu_tdx_state).
type VCPUState uint8

// vCPU states.
const (
	VCPUUninitialized VCPUState = iota // KVM_CREATE_VCPU done
	VCPUInitialized                    // KVM_TDX_INIT_VCPU done
)

// VCPU is struct vcpu_tdx: one TD vCPU as KVM runs it.
type VCPU struct {
	td    *TD
	kv    *kvm.VCPU
	mmu   *mmu.VCPU
	state VCPUState
	tdvpr addr.PFN
	tdvpx []addr.PFN
	mod   *tdxmodule.VCPU

	// pamtCache holds Dynamic PAMT pages for faults (TDX's, not KVM's).
	pamtCache *mmu.Cache

	inGuest atomic.Bool   // between TDH.VP.ENTER and the TD exit
	exits   atomic.Uint64 // TD exits so far
	kick    atomic.Bool   // KVM_REQ_OUTSIDE_GUEST_MODE pending

	// accept4KWhere2M counts this vCPU's 4K ACCEPT EPT violations whose
	// GFN KVM could have mapped at 2M (Accept4KWhere2M).
	accept4KWhere2M atomic.Int64
}

// CreateVCPU is KVM_CREATE_VCPU on a TD: allowed only once the TD is
// INITIALIZED (EIO otherwise; tdx_vcpu_create). It creates the vCPU's MMU
// and caches.
func (td *TD) CreateVCPU(t *sched.Thread, id uint32) (*VCPU, error) {
	if td.State() != StateInitialized {
		return nil, errno.Newf("KVM_CREATE_VCPU", errno.EIO, "TD is %s, not initialized", td.State())
	}
	kv, err := td.vm.CreateVCPU(t, id)
	if err != nil {
		return nil, err
	}
	mv, err := td.mmu.NewVCPU(kv)
	if err != nil {
		return nil, err
	}
	v := &VCPU{td: td, kv: kv, mmu: mv}
	mv.Arch = v
	switch {
	case td.cfg.ExternalSPTFromPrealloc:
		// The NAK'd mix (Dynamic PAMT v4 "KVM: TDX: Add x86 ops for external spt cache"): one TDX prealloc cache holds the
		// Dynamic PAMT pages and the S-EPT pages a fault may add
		// (tdx_topup_external_fault_cache), and KVM's allocation of
		// sp->external_spt draws from it (tdx_alloc_external_fault_cache).
		if v.pamtCache, err = mmu.NewVCPUCache(td.h.Mem, dpamtSourceName, td.vm.Account(), 8+5, 16+40); err != nil {
			return nil, err
		}
		mv.ExternalSPTCache = v.pamtCache
	case td.h.dynamic():
		// One pair for the leaf and one per S-EPT page a fault may add.
		lo, hi := 8, 16
		if n := td.cfg.PAMTCachePages; n > 0 {
			lo, hi = n, n
		}
		if v.pamtCache, err = mmu.NewVCPUCache(td.h.Mem, dpamtSourceName, td.vm.Account(), lo, hi); err != nil {
			return nil, err
		}
	}
	td.vcpus = append(td.vcpus, v)
	return v, nil
}

// ID returns the vCPU id.
func (v *VCPU) ID() uint32 { return v.kv.ID() }

// State returns the vCPU's TDX state.
func (v *VCPU) State() VCPUState { return v.state }

// InitVCPU is KVM_TDX_INIT_VCPU: TDVPR and TDVPX pages, TDH.VP.CREATE,
// TDH.VP.ADDCX, TDH.VP.INIT. Errors: TD not INITIALIZED or vCPU already
// initialized (EINVAL); no memory (ENOMEM); SEAMCALL failures KVM_BUG_ON
// (EIO).
func (v *VCPU) InitVCPU(t *sched.Thread) error {
	const op = "KVM_TDX_INIT_VCPU"
	td := v.td
	h := td.h
	if td.vm.Dead() {
		return errno.New(op, errno.EIO, "VM is dead")
	}
	if td.hkid == 0 || td.State() == StateRunnable {
		return errno.Newf(op, errno.EINVAL, "TD is %s", td.State())
	}
	if v.state != VCPUUninitialized {
		return errno.New(op, errno.EINVAL, "vCPU already initialized")
	}
	tdvpr, err := td.giveControlPage(t, "TDH.VP.CREATE", func(p addr.PFN) (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.VPCreate(h.Mod, t, td.tdr, p) })
	if err != nil {
		return err
	}
	v.tdvpr = tdvpr
	for range h.Mod.Config().TDVPSPages - 1 {
		p, err := td.giveControlPage(t, "TDH.VP.ADDCX", func(p addr.PFN) (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.VPAddCX(h.Mod, t, tdvpr, p) })
		if err != nil {
			return err
		}
		v.tdvpx = append(v.tdvpx, p)
	}
	if st, _ := tdxcall.VPInit(h.Mod, t, tdvpr); st != tdxmodule.Success {
		return td.bug(t, "TDH.VP.INIT", st, 0)
	}
	v.mod = h.Mod.VCPU(tdvpr)
	v.state = VCPUInitialized
	return nil
}

// reenterOnBusy reports whether a TDH.VP.ENTER status is one KVM's exit
// fast path answers by entering again at once: BUSY on the TD epoch
// (TDH.MEM.TRACK holds it) or on the S-EPT tree (TDX_ERROR_SEPT_BUSY).
// Kernel: tdx_exit_handlers_fastpath() ("TDH.VP.ENTER checks TD EPOCH
// which can contend with TDH.MEM.TRACK"), EXIT_FASTPATH_REENTER_GUEST.
func reenterOnBusy(st tdxmodule.Status) bool {
	return st == tdxmodule.OperandBusy.With(tdxmodule.OpTDEpoch) || st == tdxmodule.OperandBusy.With(tdxmodule.OpSEPTTree)
}

// enter is the part of KVM_RUN up to TDH.VP.ENTER (vcpu_enter_guest ->
// tdx_vcpu_run): pending requests first (a dead VM is EIO), no entry while
// wait_for_sept_zap is set (tdx_vcpu_run returns at once), and a BUSY entry
// is retried. It does nothing when the vCPU is already in guest mode.
func (v *VCPU) enter(t *sched.Thread) error {
	if v.inGuest.Load() {
		return nil
	}
	td := v.td
	for tries := 0; ; tries++ {
		if err := v.kv.CheckRequests(); err != nil {
			return err
		}
		if v.state != VCPUInitialized || td.State() != StateRunnable {
			return errno.Newf("KVM_RUN", errno.EINVAL, "vCPU %d cannot run: TD is %s", v.ID(), td.State())
		}
		if td.waitForSEPTZap.Load() {
			t.WaitUntil("wait_for_sept_zap cleared", func() bool { return !td.waitForSEPTZap.Load() || td.vm.Dead() })
			continue
		}
		// vcpu->mode = IN_GUEST_MODE before the last look at pending
		// requests (vcpu_enter_guest): a kick from now on waits for this
		// vCPU, and one that came before cancels the entry. Setting it
		// only after TDH.VP.ENTER returned would let tdx_track() miss a
		// vCPU that entered in the old TLB epoch.
		v.inGuest.Store(true)
		if v.kick.Load() {
			v.kick.Store(false)
			v.inGuest.Store(false)
			v.exits.Add(1)
			continue
		}
		st, _ := tdxcall.VPEnter(td.h.Mod, t, v.tdvpr)
		if st == tdxmodule.Success {
			return nil
		}
		v.inGuest.Store(false)
		v.exits.Add(1)
		if reenterOnBusy(st) {
			// Unbounded, as the kernel's fast path is: the epoch or
			// tree is held only for the span of one SEAMCALL.
			td.stats.BusyRetries.Add(1)
			t.Spin()
			continue
		}
		if !busy(st) || tries > busyRetries {
			return td.bug(t, "TDH.VP.ENTER", st, 0)
		}
		td.stats.BusyRetries.Add(1)
		t.Spin()
	}
}

// exit leaves guest mode (any TD exit).
func (v *VCPU) exit() {
	if !v.inGuest.Load() {
		return
	}
	v.td.h.Mod.TDExit(v.mod)
	v.kick.Store(false) // the exit serves KVM_REQ_OUTSIDE_GUEST_MODE
	v.inGuest.Store(false)
	v.exits.Add(1)
}

// boundary is an instruction boundary in the guest: other CPUs may run
// here, and a pending kick makes the vCPU exit (it re-enters on its next
// operation).
func (v *VCPU) boundary(t *sched.Thread) {
	t.Yield()
	if v.kick.Load() {
		v.exit()
	}
}

// step runs the guest up to its next instruction: enter if needed, then
// an instruction boundary. It reports whether the vCPU is still in the
// guest (a kick may have taken it out; the caller loops to re-enter).
func (v *VCPU) step(t *sched.Thread) (bool, error) {
	if err := v.enter(t); err != nil {
		return false, err
	}
	v.boundary(t)
	return v.inGuest.Load(), nil
}

// Halt takes the vCPU out of guest mode (HLT or the end of the guest's
// work), so that kicks need not wait for it. A guest thread must halt
// before it blocks on anything, or a kick would wait for it forever.
func (v *VCPU) Halt() { v.exit() }

// ErrVE is a #VE the TD took: a load or store to a private page it has not
// accepted (the guest's #VE handler decides what to do).
var ErrVE = errors.New("#VE: access to an unaccepted private page")

// Accept runs TDG.MEM.PAGE.ACCEPT of gpa at level in the guest. An EPT
// violation is a TD exit KVM handles here (the fault maps the page with
// TDH.MEM.PAGE.AUG), and the guest retries the TDCALL, as the real guest
// does. It returns the TDCALL status the guest finally sees, or an error
// for what stops the vCPU (a dead VM, a memory fault exit to userspace).
func (v *VCPU) Accept(t *sched.Thread, gpa addr.GPA, level addr.Level) (tdxmodule.Status, error) {
	for {
		if in, err := v.step(t); err != nil {
			return 0, err
		} else if !in {
			continue
		}
		x := v.td.h.Mod.Accept(t, v.mod, uint64(gpa)|uint64(level))
		if x.Kind == tdxmodule.ExitNone {
			return x.Status, nil
		}
		v.exit()
		if x.Kind == tdxmodule.ExitInterrupt {
			// Kernel: tdx_handle_exit() EXIT_REASON_EXTERNAL_INTERRUPT:
			// the host takes the interrupt and re-enters; the TDCALL,
			// not retired, resumes the 2M accept where it stopped.
			continue
		}
		if err := v.handleEPTViolation(t, x); err != nil {
			return 0, err
		}
	}
}

// Write stores tag to the page at gpa from inside the guest: a private
// GPA through the Secure EPT, a shared one (shared bit set) through the
// direct root. Exits are handled as in Accept; a private page not yet
// accepted raises ErrVE.
func (v *VCPU) Write(t *sched.Thread, gpa addr.GPA, tag hostmem.Tag) error {
	_, err := v.access(t, gpa, true, tag)
	return err
}

// Read loads the tag of the page at gpa from inside the guest.
func (v *VCPU) Read(t *sched.Thread, gpa addr.GPA) (hostmem.Tag, error) {
	return v.access(t, gpa, false, 0)
}

func (v *VCPU) access(t *sched.Thread, gpa addr.GPA, write bool, tag hostmem.Tag) (hostmem.Tag, error) {
	td := v.td
	shared := gpa.GFN()&td.vm.SharedBit() != 0
	for {
		if in, err := v.step(t); err != nil {
			return 0, err
		} else if !in {
			continue
		}
		if shared {
			// The CPU walks the shared EPT: KVM's direct root.
			if l, ok := td.mmu.Lookup(mmu.DirectRoot, gpa.GFN()); ok {
				pfn := l.PFN + addr.PFN(gpa.GFN()-l.GFN)
				if write {
					return tag, td.h.Mem.SetTag(t, pfn, tag)
				}
				return td.h.Mem.Tag(pfn), nil
			}
			v.exit()
			if err := v.handleEPTViolation(t, tdxmodule.Exit{Kind: tdxmodule.ExitEPTViolation, GPA: gpa}); err != nil {
				return 0, err
			}
			continue
		}
		x, got := td.h.Mod.Access(t, v.mod, gpa, write, tag, false)
		switch x.Kind {
		case tdxmodule.ExitNone:
			if x.Status != tdxmodule.Success {
				return 0, fmt.Errorf("access %s: %v", gpa, x.Status)
			}
			return got, nil
		case tdxmodule.ExitVE:
			return 0, fmt.Errorf("%w at %s", ErrVE, gpa)
		}
		v.exit()
		if err := v.handleEPTViolation(t, x); err != nil {
			return 0, err
		}
	}
}

// handleEPTViolation is tdx_handle_ept_violation(): a private GPA that the
// guest touched while PENDING with #VE disabled kills the VM (kvm_vm_dead,
// EIO); an EPT violation raised by TDG.MEM.PAGE.ACCEPT caps the fault at
// the guest's accept level (patch 13, below); then the fault is handled,
// every private fault as a write, in a local retry loop while it returns
// RET_PF_RETRY (VM dead -> EIO), so the vCPU does not re-enter without
// progress.
func (v *VCPU) handleEPTViolation(t *sched.Thread, x tdxmodule.Exit) error {
	td := v.td
	td.stats.EPTViolations.Add(1)
	td.event(t, "ept_violation", uint64(x.GPA), uint64(x.ReqLevel), 0, "")
	private := x.GPA.GFN()&td.vm.SharedBit() == 0
	if private && x.ExtQual == tdxmodule.ExtQualPendingViolate {
		td.vm.MarkDead(t, fmt.Sprintf("guest touched unaccepted private memory at %s", x.GPA))
		return errno.New("KVM_RUN", errno.EIO, "guest accessed an unaccepted private page")
	}
	maxLevel := addr.Level1G
	if private && x.ExtQual == tdxmodule.ExtQualAccept {
		maxLevel = x.ReqLevel
		if err := td.honorAcceptLevel(t, x.GPA.GFN(), maxLevel); err != nil {
			return err
		}
	}
	for {
		res, err := v.mmu.PageFault(t, x.GPA, private, maxLevel)
		if err != nil {
			return err
		}
		if res != mmu.RetRetry {
			v.countAcceptLevel(x, private)
			return nil
		}
		if td.vm.Dead() {
			return errno.New("KVM_RUN", errno.EIO, "VM is dead")
		}
		// A memslot being deleted must make progress: re-enter instead.
		if s := td.vm.SlotAt(x.GPA.GFN() &^ td.vm.SharedBit()); s != nil && s.Invalid() {
			return nil
		}
		t.Spin()
	}
}

// honorAcceptLevel is the accept-level half of tdx_handle_ept_violation()
// (patches 12-13): the guest accepts gfn at level, so any private huge
// leaf above level that covers it is split (BLOCK, TRACK, DEMOTE, under
// mmu_lock for write), and the huge pages above level holding gfn get the
// guest inhibit so that KVM never maps them huge again (level+1, and
// level+2 for a 4K accept). Nothing is done once the inhibit is set. A
// failed split is the fault's error.
//
// The pre-check of the inhibit is what keeps the write lock rare; the
// accept_level policy can drop it (guest_inhibit_always_lock) or replace
// the whole rule with RFC v1's per-vCPU request level, which never takes
// the lock here (see AcceptLevelRule).
func (td *TD) honorAcceptLevel(t *sched.Thread, gfn addr.GFN, level addr.Level) error {
	if td.cfg.AcceptLevel == AcceptViolationRequestLevel {
		return nil // the fault's max level is the request level, no more
	}
	if td.cfg.MMU.HugePages == mmu.HugePagesOff {
		// A tree without the huge-page series (every release): mainline
		// tdx_handle_ept_violation() has no accept-level handling, and
		// nothing can be mapped above 4K to split.
		return nil
	}
	slot := td.vm.SlotAt(gfn)
	if slot == nil || level >= addr.Level1G {
		return nil
	}
	if td.cfg.AcceptLevel == AcceptGuestInhibit && slot.GuestInhibited(level+1, gfn) {
		return nil
	}
	if err := td.mmu.TopUpSplitCache(t); err != nil {
		return err
	}
	lock := td.vm.MMULock()
	lock.Lock(t)
	td.stats.FaultWriteLocks.Add(1)
	defer lock.Unlock(t)
	start := gfn &^ (addr.GFN(level.Pages()) - 1)
	r := gmem.Range{Slot: slot, Start: start, End: start + addr.GFN(level.Pages()), Filter: gmem.FilterPrivate}
	if err := td.vm.SplitLocked(t, []gmem.Range{r}); err != nil {
		return err
	}
	if mutation.On(mutation.SkipGuestInhibit) {
		return nil
	}
	slot.SetGuestInhibit(level+1, gfn)
	if level == addr.Level4K {
		slot.SetGuestInhibit(addr.Level1G, gfn)
	}
	return nil
}

// TDVMCALL status codes (arch/x86/include/asm/shared/tdx.h), in R10.
const (
	TDVMCallSuccess            uint64 = 0
	TDVMCallRetry              uint64 = 1
	TDVMCallInvalidOperand     uint64 = 0x8000000000000000
	TDVMCallAlignError         uint64 = 0x8000000000000002
	TDVMCallSubfuncUnsupported uint64 = 0x8000000000000003
)

// TDVMCallStatusName names a TDVMCALL status (TDVMCALL_STATUS_RETRY, ...).
func TDVMCallStatusName(st uint64) string {
	switch st {
	case TDVMCallSuccess:
		return "TDVMCALL_STATUS_SUCCESS"
	case TDVMCallRetry:
		return "TDVMCALL_STATUS_RETRY"
	case TDVMCallInvalidOperand:
		return "TDVMCALL_STATUS_INVALID_OPERAND"
	case TDVMCallAlignError:
		return "TDVMCALL_STATUS_ALIGN_ERROR"
	case TDVMCallSubfuncUnsupported:
		return "TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED"
	}
	return fmt.Sprintf("TDVMCALL_STATUS(%#x)", st)
}

// mapGPAMaxLen is the largest range KVM forwards to userspace in one
// KVM_EXIT_HYPERCALL (TDX_MAP_GPA_MAX_LEN).
const mapGPAMaxLen = 2 << 20

// MapGPAExit is the KVM_EXIT_HYPERCALL with nr = KVM_HC_MAP_GPA_RANGE that
// a guest's MapGPA becomes: args are the GPA without the shared bit, the
// page count, and KVM_MAP_GPA_RANGE_ENCRYPTED (Private) or DECRYPTED.
type MapGPAExit struct {
	GPA     uint64
	NPages  uint64
	Private bool
}

// MapGPAHandler is the VMM's answer to a MapGPA exit: nil (0), EAGAIN
// (the guest sees RETRY) or EINVAL (INVALID_OPERAND); it converts the range
// (KVM_SET_MEMORY_ATTRIBUTES, and a punch hole when it goes shared).
type MapGPAHandler func(t *sched.Thread, v *VCPU, x MapGPAExit) error

// SetVMM installs the VMM's MapGPA handler and enables the exit
// (KVM_CAP_EXIT_HYPERCALL with KVM_HC_MAP_GPA_RANGE).
func (td *TD) SetVMM(h MapGPAHandler) { td.vmm = h }

// LastMapGPARetry returns why userspace last answered a MapGPA exit with
// EAGAIN (which the guest sees as TDVMCALL_RETRY), or "".
func (td *TD) LastMapGPARetry() string {
	if p := td.lastRetry.Load(); p != nil {
		return *p
	}
	return ""
}

// MapGPA is the guest's TDG.VP.VMCALL<MapGPA>(gpa, size): gpa with the
// shared bit asks for shared memory, without it for private. Kernel:
// tdx_map_gpa(): no VMM handler -> SUBFUNC_UNSUPPORTED; a range that wraps,
// leaves the guest physical address width or straddles the shared bit ->
// INVALID_OPERAND; not page aligned -> ALIGN_ERROR; otherwise chunks of up
// to 2 MiB go to userspace, whose EAGAIN is RETRY and EINVAL
// INVALID_OPERAND. It returns the status in R10 and R11 (the GPA where it
// stopped), or an error for what stops the vCPU.
func (v *VCPU) MapGPA(t *sched.Thread, gpa, size uint64) (status, r11 uint64, err error) {
	td := v.td
	if err := v.enter(t); err != nil {
		return 0, 0, err
	}
	v.boundary(t)
	v.exit() // TDG.VP.VMCALL is a TD exit
	td.stats.MapGPAExits.Add(1)
	shared := uint64(td.vm.SharedBit().GPA())
	gpaw := uint64(1) << 48
	switch {
	case td.vmm == nil:
		return TDVMCallSubfuncUnsupported, gpa, nil
	case gpa+size <= gpa || gpa >= gpaw || gpa+size-1 >= gpaw || gpa&shared != (gpa+size-1)&shared:
		return TDVMCallInvalidOperand, gpa, nil
	case gpa%addr.PageSize != 0 || size%addr.PageSize != 0:
		return TDVMCallAlignError, gpa, nil
	}
	private := gpa&shared == 0
	for next, end := gpa, gpa+size; next < end; {
		n := min(end-next, mapGPAMaxLen)
		err := td.vmm(t, v, MapGPAExit{GPA: next &^ shared, NPages: n >> addr.PageShift, Private: private})
		switch {
		case errors.Is(err, errno.EAGAIN):
			why := err.Error()
			td.lastRetry.Store(&why)
			return TDVMCallRetry, next, nil
		case errors.Is(err, errno.EINVAL):
			return TDVMCallInvalidOperand, next, nil
		case err != nil:
			return 0, next, err
		}
		next += n
	}
	return TDVMCallSuccess, gpa + size, nil
}
