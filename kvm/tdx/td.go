package tdx

import (
	"fmt"
	"sync/atomic"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/internal/mutation"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxcall"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// State is the TD's life-cycle state in KVM (enum kvm_tdx_state).
type State uint8

// TD states.
const (
	StateUninitialized State = iota // KVM_CREATE_VM done, no HKID
	StateInitialized                // KVM_TDX_INIT_VM done: HKID, TDR, TDCS
	StateRunnable                   // KVM_TDX_FINALIZE_VM done
)

func (s State) String() string {
	return [...]string{"TD_STATE_UNINITIALIZED", "TD_STATE_INITIALIZED", "TD_STATE_RUNNABLE"}[s]
}

// Config holds options of one TD.
type Config struct {
	// MMU holds the TDP MMU's policy knobs.
	MMU mmu.Config
	// PinPrivatePages is the pin_private_pages policy ("KVM: TDX: Drop superfluous page pinning in S-EPT management", the
	// v6.16 design): tdx_sept_set_private_spte() takes a reference
	// (get_page) on every 4K page it maps, and tdx_sept_drop_private_spte()
	// drops it (tdx_unpin) after a successful REMOVE. guest_memfd cannot
	// tell that reference from a transient one, so in-place conversion's
	// folio split waits for it forever.
	PinPrivatePages bool
	// PopulateThroughFault is populate=gmem_populate (the "KVM: TDX: Decouple TDX init mem region from kvm_gmem_populate()" RFC, the
	// v6.16 design): tdx_gmem_post_populate() maps the page with
	// kvm_tdp_map_page(), a synthesized fault that asks guest_memfd for
	// the PFN again (kvm_gmem_get_pfn) while kvm_gmem_populate holds the
	// invalidate lock; when get_pfn takes that lock too (the in-place
	// conversion series), the thread waits for itself.
	PopulateThroughFault bool
	// ExternalSPTFromPrealloc is external_spt_cache=tdx_prealloc (seed
	// 003, the NAK'd v4 DPAMT series): the fault path's S-EPT pages come
	// from TDX's per-vCPU prealloc cache (the Dynamic PAMT page cache),
	// KVM frees them as its own (tdp_mmu_free_sp: free_page), and the
	// per-VM split cache is topped up with GFP_KERNEL (not charged to
	// the VM).
	ExternalSPTFromPrealloc bool
	// TerminateVM is teardown=terminate_vm: the tree has
	// KVM_TDX_TERMINATE_VM and the VMM calls it before closing the
	// guest_memfd, so the HKID is released first and private leaves are
	// reclaimed with TDH.PHYMEM.PAGE.RECLAIM (see TerminateVM). Without it
	// the sub-command is unknown (EINVAL).
	TerminateVM bool
	// PAMTCachePages, when not 0, sizes the per-vCPU Dynamic PAMT page
	// cache as Dynamic PAMT v6 does: topped up before mmu_lock whenever it
	// holds fewer than this many pages, to exactly this many. Series:
	// "[PATCH v6 08/11] x86/tdx: Add APIs to support Dynamic PAMT ops from
	// KVM's fault path" (tdx_topup_pamt_cache(cache, npages) fills to
	// npages * TDX_DPAMT_ENTRY_PAGE_CNT) and "[PATCH v6 09/11] KVM: TDX:
	// Get/put PAMT pages when (un)mapping private memory"
	// (mmu_topup_memory_caches() passes PT64_ROOT_MAX_LEVEL: 10 pages).
	// 0 keeps the model's cache: refilled to 16 pages below 8.
	PAMTCachePages int
	// OptionalSource lets KVM_TDX_INIT_MEM_REGION take source_addr 0
	// when guest_memfd tracks the attributes: the page already holds
	// the contents and is its own TDH.MEM.PAGE.ADD source. Series:
	// "[PATCH RFC v5 25/53] KVM: TDX: Make source page optional for
	// KVM_TDX_INIT_MEM_REGION"
	// (20260428-gmem-inplace-conversion-v5-25-d8608ccfca22@google.com;
	// also in v6 to v8): tdx_gmem_post_populate() uses
	// pfn_to_page(pfn) when src_page is NULL and !vm_memory_attributes.
	OptionalSource bool
	// AcceptLevel is the accept_level policy: how an EPT violation that
	// carries the guest's accept level caps the mapping (AcceptLevelRule).
	AcceptLevel AcceptLevelRule
}

// TD is struct kvm_tdx: KVM's side of one TD.
type TD struct {
	h   *Host
	vm  *kvm.VM
	mmu *mmu.MMU
	cfg Config

	state atomic.Uint32 // State
	hkid  int           // 0 = not assigned
	tdr   addr.PFN
	tdcs  []addr.PFN
	vcpus []*VCPU

	// waitForSEPTZap is kvm_tdx->wait_for_sept_zap: while set, vCPUs do
	// not enter the guest (tdh_do_no_vcpus).
	waitForSEPTZap atomic.Bool

	// splitPAMT is the per-VM cache of Dynamic PAMT pages for splits.
	splitPAMT *mmu.Cache
	// pageAddSrc is kvm_tdx->page_add_src: the source page of the
	// KVM_TDX_INIT_MEM_REGION page being added.
	pageAddSrc    addr.PFN
	hasPageAddSrc bool

	vmm       MapGPAHandler
	lastRetry atomic.Pointer[string] // the last EAGAIN behind a TDVMCALL_RETRY

	stats counters
}

// counters are Stats as atomics: vCPUs on real goroutines (the parallel
// scheduler) bump them concurrently, as the kernel's per-VM stats do.
type counters struct {
	PagesAdded, PagesAugmented, PagesRemoved atomic.Int64
	HugePagesAugmented, HugePagesRemoved     atomic.Int64
	Splits                                   atomic.Int64
	SEPTPagesAdded, SEPTPagesReclaimed       atomic.Int64
	BusyRetries, NoVCPURetries, Kicks        atomic.Int64
	EPTViolations, MapGPAExits               atomic.Int64
	ControlPagesReclaimed, Leaked            atomic.Int64
	PagesPinned                              atomic.Int64
	PrivateReclaimed                         [3]atomic.Int64 // by addr.Level
	FaultWriteLocks                          atomic.Int64
}

// Stats counts what KVM's TDX code did.
type Stats struct {
	PagesAdded, PagesAugmented, PagesRemoved int64
	HugePagesAugmented, HugePagesRemoved     int64 // 2M and 1G leaves
	Splits                                   int64 // TDH.MEM.PAGE.DEMOTE done
	SEPTPagesAdded, SEPTPagesReclaimed       int64
	BusyRetries                              int64 // SEAMCALLs retried after TDX_OPERAND_BUSY
	NoVCPURetries                            int64 // tdh_do_no_vcpus second attempts
	Kicks                                    int64 // KVM_REQ_OUTSIDE_GUEST_MODE rounds
	EPTViolations, MapGPAExits               int64
	ControlPagesReclaimed                    int64
	Leaked                                   int64 // pages left behind after a failed reclaim
	PagesPinned                              int64 // 4K pages holding a pin_private_pages reference now
	// PrivateReclaimed counts private leaves by addr.Level taken back
	// with TDH.PHYMEM.PAGE.RECLAIM after KVM_TDX_TERMINATE_VM released
	// the HKID, instead of being removed.
	PrivateReclaimed [3]int64
	// FaultWriteLocks counts kvm->mmu_lock taken for write in the EPT
	// violation path (the accept-level rule, AcceptLevelRule).
	FaultWriteLocks int64
}

// NewTD makes vm, a KVM_X86_TDX_VM, a TD: it attaches a TDP MMU with a
// mirror root whose external page table is this TD's S-EPT, and the TDX
// teardown hooks (tdx_vm_init).
func (h *Host) NewTD(vm *kvm.VM, cfg Config) (*TD, error) {
	if vm.Type() != kvm.TDXVM {
		return nil, errno.Newf("tdx_vm_init", errno.EINVAL, "%s is not a KVM_X86_TDX_VM", vm.Type())
	}
	td := &TD{h: h, vm: vm, cfg: cfg}
	m, err := mmu.New(vm, cfg.MMU, td)
	if err != nil {
		return nil, err
	}
	td.mmu = m
	if h.dynamic() {
		// The per-VM split cache of Dynamic PAMT pages (patch 20).
		if td.splitPAMT, err = mmu.NewCache(h.Mem, dpamtSourceName, vm.Account(), 0, 4*4); err != nil {
			return nil, err
		}
		// tdx_topup_vm_split_cache() in the v4 series allocates with
		// GFP_KERNEL, not GFP_KERNEL_ACCOUNT (Dynamic PAMT v4 "KVM: TDX: Add x86 ops for external spt cache").
		td.splitPAMT.Uncharged = cfg.ExternalSPTFromPrealloc
	}
	vm.SetArch(td)
	return td, nil
}

// VM returns the KVM VM.
func (td *TD) VM() *kvm.VM { return td.vm }

// MMU returns the TD's TDP MMU.
func (td *TD) MMU() *mmu.MMU { return td.mmu }

// State returns the life-cycle state.
func (td *TD) State() State { return State(td.state.Load()) }

// HKID returns the TD's private KeyID, 0 when none is assigned.
func (td *TD) HKID() int { return td.hkid }

// DPAMTNeeded returns, per 2 MiB host range (PFN>>9), how many Dynamic
// PAMT references the TD's pages need now: one per 4K private leaf, per
// S-EPT page and per control page; 2M and 1G leaves need none (TDX
// huge-page series patch 17). A read-only view for checks, to compare
// with DPAMTRef.
func (td *TD) DPAMTNeeded() map[addr.PFN]int32 {
	want := map[addr.PFN]int32{}
	td.mmu.Leaves(mmu.MirrorRoot, func(l mmu.Leaf) bool {
		if l.Level == addr.Level4K {
			want[l.PFN>>9]++
		}
		return true
	})
	td.mmu.Tables(mmu.MirrorRoot, func(tb mmu.Table) {
		if tb.HasExt {
			want[tb.External>>9]++
		}
	})
	for _, p := range td.ControlPages() {
		want[p>>9]++
	}
	return want
}

// TDR returns the TDR page (zero before INIT_VM).
func (td *TD) TDR() addr.PFN { return td.tdr }

// Stats returns the counters.
func (td *TD) Stats() Stats {
	c := &td.stats
	return Stats{
		PagesAdded: c.PagesAdded.Load(), PagesAugmented: c.PagesAugmented.Load(), PagesRemoved: c.PagesRemoved.Load(),
		HugePagesAugmented: c.HugePagesAugmented.Load(), HugePagesRemoved: c.HugePagesRemoved.Load(),
		Splits:         c.Splits.Load(),
		SEPTPagesAdded: c.SEPTPagesAdded.Load(), SEPTPagesReclaimed: c.SEPTPagesReclaimed.Load(),
		BusyRetries: c.BusyRetries.Load(), NoVCPURetries: c.NoVCPURetries.Load(), Kicks: c.Kicks.Load(),
		EPTViolations: c.EPTViolations.Load(), MapGPAExits: c.MapGPAExits.Load(),
		ControlPagesReclaimed: c.ControlPagesReclaimed.Load(), Leaked: c.Leaked.Load(), PagesPinned: c.PagesPinned.Load(),
		PrivateReclaimed: [3]int64{c.PrivateReclaimed[0].Load(), c.PrivateReclaimed[1].Load(), c.PrivateReclaimed[2].Load()},
		FaultWriteLocks:  c.FaultWriteLocks.Load(),
	}
}

// ControlPages returns the pages the TD's control structures live in
// (TDR, TDCS, each vCPU's TDVPR and TDVPX), for checks.
func (td *TD) ControlPages() []addr.PFN {
	var out []addr.PFN
	if td.tdr != 0 {
		out = append(out, td.tdr)
	}
	out = append(out, td.tdcs...)
	for _, v := range td.vcpus {
		if v.tdvpr != 0 {
			out = append(out, v.tdvpr)
		}
		out = append(out, v.tdvpx...)
	}
	return out
}

// VCPUs returns the TD's vCPUs in creation order.
func (td *TD) VCPUs() []*VCPU { return td.vcpus }

func (td *TD) event(t *sched.Thread, name string, a0, a1 uint64, st tdxmodule.Status, detail string) {
	if td.h.sink == event.Discard {
		return // nobody listens (a bench): one per EPT violation adds up
	}
	ev := event.Event{Kind: event.KindTDX, Name: name, Status: uint64(st), Args: [4]uint64{a0, a1, uint64(td.vm.ID())}, Detail: detail}
	t.Stamp(&ev)
	td.h.sink.Emit(ev)
}

// bug is TDX_BUG_ON: KVM_BUG_ON with the SEAMCALL named; it returns EIO.
func (td *TD) bug(t *sched.Thread, leaf string, st tdxmodule.Status, gfn addr.GFN) error {
	return td.vm.Bug(t, fmt.Sprintf("%s failed at %s: %v", leaf, gfn.GPA(), st))
}

// guard is the prologue of the TDX VM and vCPU sub-ioctls: a dead VM is
// EIO, and the command runs under slots_lock (tdx_vm_state_guard; the
// model has no kvm->lock or vcpu->mutex to take besides).
func (td *TD) guard(t *sched.Thread, op string) (unlock func(), err error) {
	if td.vm.Dead() {
		return nil, errno.New(op, errno.EIO, "VM is dead")
	}
	td.vm.SlotsLock().Lock(t)
	return func() { td.vm.SlotsLock().Unlock(t) }, nil
}

// InitVM holds struct kvm_tdx_init_vm's fields the model uses.
type InitVM struct {
	// GPAW is the guest physical address width from CPUID 0x80000008
	// EAX[23:16]: 48 (shared bit 47) or 52 (shared bit 51, needs 5-level
	// EPT, which the model's 4-level roots do not have).
	GPAW int
	// MaxVCPUs bounds KVM_CREATE_VCPU (TD_PARAMS.MAX_VCPUS).
	MaxVCPUs int
	// HWError is the userspace-supplied hw_error field: must be 0.
	HWError uint64
}

// InitVM is KVM_TDX_INIT_VM. Kernel: tdx_td_init() under the state guard
// (kvm->lock, every vcpu->mutex, slots_lock). Errors: not UNINITIALIZED,
// hw_error set, or a bad GPAW (EINVAL); vCPUs already created (EBUSY); no
// free HKID (ENOSPC); no memory (ENOMEM); a dead VM (EIO). SEAMCALL
// failures are KVM_BUG_ON (EIO) and leave the TD UNINITIALIZED.
func (td *TD) InitVM(t *sched.Thread, p InitVM) error {
	const op = "KVM_TDX_INIT_VM"
	vm := td.vm
	unlock, err := td.guard(t, op)
	if err != nil {
		return err
	}
	defer unlock()
	switch {
	case td.State() != StateUninitialized:
		return errno.Newf(op, errno.EINVAL, "TD is %s, not uninitialized", td.State())
	case p.HWError != 0:
		return errno.New(op, errno.EINVAL, "hw_error must be 0 on input")
	case len(vm.VCPUs()) > 0:
		return errno.New(op, errno.EBUSY, "vCPUs were created before KVM_TDX_INIT_VM")
	case p.GPAW != 48 && p.GPAW != 52:
		return errno.Newf(op, errno.EINVAL, "GPAW %d: must be 48 or 52", p.GPAW)
	case p.GPAW == 52:
		return errno.New(op, errno.EINVAL, "GPAW 52 needs 5-level EPT, which this host does not have")
	case p.MaxVCPUs < 0 || p.MaxVCPUs > kvm.MaxVCPUIDs:
		return errno.Newf(op, errno.EINVAL, "max_vcpus %d out of range", p.MaxVCPUs)
	}
	h := td.h
	hkid, err := h.allocHKID()
	if err != nil {
		return err
	}
	tdr, err := td.giveControlPage(t, "TDH.MNG.CREATE", func(p addr.PFN) (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.MngCreate(h.Mod, t, p, hkid) })
	if err != nil {
		h.freeHKID(hkid)
		return err
	}
	td.tdr, td.hkid = tdr, hkid
	for pkg := range h.Mod.Config().Packages {
		if st, _ := tdxcall.MngKeyConfig(h.Mod, t, tdr, pkg); st != tdxmodule.Success {
			return td.bug(t, "TDH.MNG.KEY.CONFIG", st, 0)
		}
	}
	for range h.Mod.Config().TDCSPages {
		p, err := td.giveControlPage(t, "TDH.MNG.ADDCX", func(p addr.PFN) (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.MngAddCX(h.Mod, t, tdr, p) })
		if err != nil {
			return err
		}
		td.tdcs = append(td.tdcs, p)
	}
	if st, _ := tdxcall.MngInit(h.Mod, t, tdr, 4, max(p.MaxVCPUs, 1)); st != tdxmodule.Success {
		return td.bug(t, "TDH.MNG.INIT", st, 0)
	}
	vm.SetSharedBit(uint(p.GPAW - 1))
	td.state.Store(uint32(StateInitialized))
	td.event(t, op, uint64(hkid), uint64(p.GPAW), 0, "")
	return nil
}

// giveControlPage allocates a control page with its Dynamic PAMT pair
// (tdx_alloc_control_page) and hands it to the module with give; if the
// module refuses it, the page is freed and the refusal is TDX_BUG_ON (EIO).
func (td *TD) giveControlPage(t *sched.Thread, leaf string, give func(addr.PFN) (tdxmodule.Status, tdxmodule.Regs)) (addr.PFN, error) {
	p, err := td.h.allocControlPage(t, td.vm.Account())
	if err != nil {
		return 0, err
	}
	if st, _ := give(p); st != tdxmodule.Success {
		td.h.freeControlPage(t, p)
		return 0, td.bug(t, leaf, st, 0)
	}
	return p, nil
}

// Finalize is KVM_TDX_FINALIZE_VM: TDH.MR.FINALIZE, then the TD is
// RUNNABLE and pre-faults are allowed. Errors: no HKID or already RUNNABLE
// (EINVAL); BUSY (EBUSY); other failures KVM_BUG_ON (EIO).
func (td *TD) Finalize(t *sched.Thread) ([]byte, error) {
	const op = "KVM_TDX_FINALIZE_VM"
	unlock, err := td.guard(t, op)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if td.hkid == 0 || td.State() != StateInitialized {
		return nil, errno.Newf(op, errno.EINVAL, "TD is %s", td.State())
	}
	st, _ := tdxcall.MrFinalize(td.h.Mod, t, td.tdr)
	if st.HasCode(tdxmodule.OperandBusy) {
		return nil, errno.New(op, errno.EBUSY, "TDH.MR.FINALIZE: TDX_OPERAND_BUSY")
	}
	if st != tdxmodule.Success {
		return nil, td.bug(t, "TDH.MR.FINALIZE", st, 0)
	}
	td.state.Store(uint32(StateRunnable))
	td.vm.SetPreFaultAllowed() // tdx_td_finalize(): kvm->arch.pre_fault_allowed = true
	info, _ := td.h.Mod.TD(td.tdr)
	td.event(t, op, 0, 0, 0, "")
	return info.MRTD, nil
}

// MemRegion is struct kvm_tdx_init_mem_region plus the command's flags.
type MemRegion struct {
	SourceAddr uint64 // userspace address of the source bytes
	GPA        uint64
	NPages     uint64
	Measure    bool // KVM_TDX_MEASURE_MEMORY_REGION
	Flags      uint32
}

// MeasureMemoryRegion is KVM_TDX_MEASURE_MEMORY_REGION.
const MeasureMemoryRegion = 1 << 0

// InitMemRegion is KVM_TDX_INIT_MEM_REGION on vCPU v. Kernel (v6.19):
// tdx_vcpu_init_mem_region() under slots_lock, one page at a time through
// kvm_gmem_populate(); its callback tdx_gmem_post_populate() holds the
// private PFN guest_memfd gave it and the GUP'd source page, maps the PFN
// into the mirror root with kvm_tdp_mmu_map_private_pfn() — no page fault
// is synthesized and guest_memfd is not asked again (the "KVM: TDX: Decouple TDX init mem region from kvm_gmem_populate()" RFC) — whose
// set_external_spte does TDH.MEM.PAGE.ADD from the source; then TDH.MR.EXTEND
// for each 256-byte chunk when measuring. The region is updated as pages
// are done (the struct is copied back even on error).
//
// Errors: EINTR when a signal is pending before a page (the pages done
// stay done and the region says where to resume); vCPU not initialized, TD runnable, unknown flags, a source or
// GPA not page aligned, a zero source (T4) or page count, a range that
// wraps or carries the shared bit (EINVAL); what kvm_gmem_populate returns
// (e.g. EINVAL for a GFN not private); EFAULT for a source not mapped;
// EIO (VM bugged) for a failed PAGE.ADD or MR.EXTEND.
func (td *TD) InitMemRegion(t *sched.Thread, v *VCPU, r *MemRegion) error {
	const op = "KVM_TDX_INIT_MEM_REGION"
	vm := td.vm
	unlock, err := td.guard(t, op)
	if err != nil {
		return err
	}
	defer unlock()
	shared := uint64(vm.SharedBit().GPA())
	end := r.GPA + r.NPages<<addr.PageShift
	switch {
	case v.State() != VCPUInitialized:
		return errno.New(op, errno.EINVAL, "vCPU is not initialized (KVM_TDX_INIT_VCPU)")
	case td.State() == StateRunnable || td.hkid == 0:
		return errno.Newf(op, errno.EINVAL, "TD is %s", td.State())
	case r.Flags&^MeasureMemoryRegion != 0:
		return errno.Newf(op, errno.EINVAL, "unknown flags %#x", r.Flags)
	case (r.SourceAddr == 0 && !td.cfg.OptionalSource) || r.SourceAddr%addr.PageSize != 0 || r.GPA%addr.PageSize != 0:
		return errno.New(op, errno.EINVAL, "source_addr and gpa must be non-zero page-aligned (gpa may be 0)")
	case r.NPages == 0 || r.NPages > 1<<40 || end <= r.GPA:
		return errno.Newf(op, errno.EINVAL, "nr_pages %d: zero or the range wraps", r.NPages)
	case r.GPA&shared != 0 || (end-1)&shared != 0:
		return errno.New(op, errno.EINVAL, "the range carries the shared bit")
	}
	if r.Flags&MeasureMemoryRegion != 0 {
		r.Measure = true
	}
	user := vm.UserMemory()
	for r.NPages > 0 {
		// Kernel: tdx_vcpu_init_mem_region(): "if (signal_pending(current))
		// { ret = -EINTR; break; }" at the top of each page; the region,
		// copied back, says how far it got.
		if t.SignalPending() {
			return errno.Newf(op, errno.EINTR, "signal pending after %#x", r.GPA)
		}
		gfn := addr.GPA(r.GPA).GFN()
		src := func(t *sched.Thread, _ int64) (addr.PFN, func(), error) {
			if user == nil {
				return 0, nil, errno.New("get_user_pages_fast", errno.EFAULT, "no userspace memory")
			}
			p, err := user.GetUserPage(t, r.SourceAddr, false)
			if err != nil {
				return 0, nil, errno.Wrapf("get_user_pages_fast", errno.EFAULT, err, "source %#x", r.SourceAddr)
			}
			return p, func() { _ = td.h.Mem.Put(t, p) }, nil
		}
		inPlace := r.SourceAddr == 0 // OptionalSource: the page is its own source
		if inPlace {
			src = nil
		}
		n, err := gmem.Populate(t, slotOrNil(vm.SlotAt(gfn)), gfn, src, 1, func(t *sched.Thread, gfn addr.GFN, pfn, srcPFN addr.PFN) error {
			if inPlace {
				srcPFN = pfn
			}
			return td.postPopulate(t, v, gfn, pfn, srcPFN, r.Measure)
		})
		if err != nil {
			return err
		}
		if n != 1 {
			return errno.Newf(op, errno.EIO, "kvm_gmem_populate did %d pages, want 1", n)
		}
		if !inPlace {
			r.SourceAddr += addr.PageSize
		}
		r.GPA += addr.PageSize
		r.NPages--
	}
	return nil
}

// slotOrNil keeps a nil *Memslot from becoming a non-nil gmem.Slot.
func slotOrNil(s *kvm.Memslot) gmem.Slot {
	if s == nil {
		return nil
	}
	return s
}

// postPopulate is tdx_gmem_post_populate() (v6.19).
func (td *TD) postPopulate(t *sched.Thread, v *VCPU, gfn addr.GFN, pfn, src addr.PFN, measure bool) error {
	if td.hasPageAddSrc {
		return td.vm.Bug(t, "page_add_src already set")
	}
	td.pageAddSrc, td.hasPageAddSrc = src, true
	var err error
	if td.cfg.PopulateThroughFault {
		err = td.mapThroughFault(t, v, gfn)
	} else {
		err = v.mmu.MapPrivatePFN(t, gfn, pfn)
	}
	td.pageAddSrc, td.hasPageAddSrc = 0, false
	if err != nil {
		return err
	}
	if !measure {
		return nil
	}
	for off := addr.GPA(0); off < addr.PageSize; off += 256 {
		st, _ := tdxcall.MrExtend(td.h.Mod, t, td.tdr, gfn.GPA()+off)
		if st != tdxmodule.Success {
			return td.bug(t, "TDH.MR.EXTEND", st, gfn)
		}
	}
	return nil
}

// mapThroughFault is the populate=gmem_populate policy's mapping step:
// kvm_tdp_map_page() (v6.16, called from tdx_gmem_post_populate), a
// synthesized private fault at 4K retried while RET_PF_RETRY, which throws
// away the PFN kvm_gmem_populate handed over and asks guest_memfd again
// (kvm_mmu_faultin_pfn -> kvm_gmem_get_pfn) with the invalidate lock held
// (the "KVM: TDX: Decouple TDX init mem region from kvm_gmem_populate()" RFC). Errors: the fault's; EIO for a result other than FIXED or
// SPURIOUS.
func (td *TD) mapThroughFault(t *sched.Thread, v *VCPU, gfn addr.GFN) error {
	for {
		res, err := v.mmu.PageFault(t, gfn.GPA(), true, addr.Level4K)
		if err != nil {
			return err
		}
		switch res {
		case mmu.RetFixed, mmu.RetSpurious:
			return nil
		case mmu.RetRetry:
			continue
		}
		return errno.Newf("kvm_tdp_map_page", errno.EIO, "%s at %s", res, gfn)
	}
}

// PreDestroyVM is tdx_mmu_release_hkid(): flush every vCPU off its CPU
// (TDH.VP.FLUSH), TDH.MNG.VPFLUSHDONE, TDH.PHYMEM.CACHE.WB on each
// package, TDH.MNG.KEY.FREEID; the HKID goes back to the pool. A failure
// leaks the HKID (pr_err), and the TD's pages then cannot be reclaimed.
func (td *TD) PreDestroyVM(t *sched.Thread) {
	if td.hkid == 0 {
		return
	}
	h := td.h
	fail := func(leaf string, st tdxmodule.Status) {
		h.warn(t, leaf, st, td.tdr)
		td.event(t, "hkid_leaked", uint64(td.hkid), 0, st, leaf)
	}
	for _, v := range td.vcpus {
		if v.tdvpr == 0 {
			continue
		}
		if st, _ := tdxcall.VPFlush(h.Mod, t, v.tdvpr); st != tdxmodule.Success && !st.HasCode(tdxmodule.VCPUNotAssociated) {
			fail("TDH.VP.FLUSH", st)
			return
		}
	}
	if st, _ := tdxcall.MngVPFlushDone(h.Mod, t, td.tdr); st != tdxmodule.Success {
		fail("TDH.MNG.VPFLUSHDONE", st)
		return
	}
	for pkg := range h.Mod.Config().Packages {
		if st, _ := tdxcall.PhymemCacheWB(h.Mod, t, pkg); st != tdxmodule.Success {
			fail("TDH.PHYMEM.CACHE.WB", st)
			return
		}
	}
	if st, _ := tdxcall.MngKeyFreeID(h.Mod, t, td.tdr); st != tdxmodule.Success {
		fail("TDH.MNG.KEY.FREEID", st)
		return
	}
	h.freeHKID(td.hkid)
	td.event(t, "release_hkid", uint64(td.hkid), 0, 0, "")
	td.hkid = 0
}

// DestroyVCPUs is tdx_vcpu_free() for each vCPU: reclaim TDVPX and TDVPR
// pages (only once the HKID is released; otherwise they leak) and release
// the vCPU's Dynamic PAMT cache.
func (td *TD) DestroyVCPUs(t *sched.Thread) {
	for _, v := range td.vcpus {
		if v.pamtCache != nil {
			_ = v.pamtCache.Release(t)
		}
		pages := append(append([]addr.PFN(nil), v.tdvpx...), v.tdvpr)
		if v.tdvpr == 0 {
			pages = v.tdvpx
		}
		td.reclaimControl(t, pages)
		v.tdvpx, v.tdvpr = nil, 0
	}
}

// DestroyVM is tdx_vm_destroy(): reclaim the TDCS pages, then the TDR.
func (td *TD) DestroyVM(t *sched.Thread) {
	if td.splitPAMT != nil {
		_ = td.splitPAMT.Release(t)
	}
	td.reclaimControl(t, td.tdcs)
	td.tdcs = nil
	if td.tdr != 0 && !mutation.On(mutation.ForgetTDRAtTeardown) {
		td.reclaimControl(t, []addr.PFN{td.tdr})
		td.tdr = 0
	}
	td.state.Store(uint32(StateUninitialized))
}

func (td *TD) reclaimControl(t *sched.Thread, pages []addr.PFN) {
	for _, p := range pages {
		if td.hkid != 0 {
			td.leak(p, addr.Level4K)
			td.h.warn(t, "reclaim with HKID assigned", 0, p)
			continue
		}
		if err := td.h.reclaimPage(t, p, hostmem.SourceBuddy); err != nil {
			td.leak(p, addr.Level4K)
			continue
		}
		td.stats.ControlPagesReclaimed.Add(1)
	}
}

var _ kvm.Arch = (*TD)(nil)
var _ mmu.External = (*TD)(nil)
