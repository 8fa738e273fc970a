// Package kvm models the KVM VM as userspace and guest_memfd see it: VM
// types, memslots bound to guest_memfd (KVM_SET_USER_MEMORY_REGION2), memory
// attributes (KVM_SET_MEMORY_ATTRIBUTES) with the per-level "mixed" tracking
// that forbids huge mappings over mixed ranges, the MMU invalidation
// sequence that makes a racing fault retry, and KVM_BUG_ON.
//
// Kernel: virt/kvm/kvm_main.c, arch/x86/kvm/x86.c and the attribute parts of
// arch/x86/kvm/mmu/mmu.c (v6.19). Every method that models an ioctl returns
// the errno the kernel returns for the same input, as an *errno.Error.
//
// The page tables themselves live in kvm/mmu; this package reaches them
// only through the MMU interface, as kvm_main.c reaches the arch MMU.
package kvm

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/internal/fd"
	"github.com/tdxsim/tdxsim/internal/rangemap"
	"github.com/tdxsim/tdxsim/sched"
)

// VMType is the KVM_CREATE_VM machine type (KVM_X86_*_VM).
type VMType uint32

// x86 VM types (arch/x86/include/uapi/asm/kvm.h).
const (
	DefaultVM     VMType = 0 // KVM_X86_DEFAULT_VM
	SWProtectedVM VMType = 1 // KVM_X86_SW_PROTECTED_VM
	TDXVM         VMType = 5 // KVM_X86_TDX_VM
)

func (v VMType) String() string {
	switch v {
	case DefaultVM:
		return "KVM_X86_DEFAULT_VM"
	case SWProtectedVM:
		return "KVM_X86_SW_PROTECTED_VM"
	case TDXVM:
		return "KVM_X86_TDX_VM"
	}
	return fmt.Sprintf("vm type %d", uint32(v))
}

// hasPrivateMem is kvm_arch_has_private_mem().
func (v VMType) hasPrivateMem() bool { return v == SWProtectedVM || v == TDXVM }

// Capabilities (KVM_CHECK_EXTENSION numbers).
const (
	CapNrMemslots       = 10
	CapUserMemory2      = 231
	CapMemoryFaultInfo  = 232
	CapMemoryAttributes = 233
	CapGuestMemfd       = 234
	CapVMTypes          = 235
	CapPreFaultMemory   = 236
	CapGuestMemfdFlags  = 244
	// CapMemoryAttributes2Flags is KVM_CAP_MEMORY_ATTRIBUTES2_FLAGS.
	// Series: "[PATCH RFC v5 28/53] KVM: Add CAP to enumerate supported
	// SET_MEMORY_ATTRIBUTES2 flags"
	// (20260428-gmem-inplace-conversion-v5-28-d8608ccfca22@google.com).
	CapMemoryAttributes2Flags = 250
	CapMultiAddressSpace      = 118
	CapReadonlyMem            = 81
)

// Memory region flags (struct kvm_userspace_memory_region2.flags).
const (
	MemLogDirtyPages uint32 = 1 << 0
	MemReadonly      uint32 = 1 << 1
	MemGuestMemfd    uint32 = 1 << 2
)

// Limits.
const (
	// NrMemslots is KVM_USER_MEM_SLOTS on x86 (what KVM_CAP_NR_MEMSLOTS
	// reports: 32764 on the test host, per kvmhost's differential tests).
	NrMemslots = 32764
	// MaxSlotPages is KVM_MEM_MAX_NR_PAGES.
	MaxSlotPages = 1<<31 - 1
	// MaxVCPUIDs is KVM_MAX_VCPU_IDS on x86.
	MaxVCPUIDs = 4096
	// taskSizeMax is TASK_SIZE_MAX on x86-64 with 4-level paging: the end
	// of the user address range access_ok() accepts.
	taskSizeMax = 1<<47 - 4096
)

// Config describes the host KVM being modelled: which VM types and
// features it has. The zero value is not useful; start from DefaultConfig.
type Config struct {
	// VMTypes is the KVM_CAP_VM_TYPES bitmask.
	VMTypes uint32
	// MemoryAttributes is CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES: without it
	// KVM_SET_MEMORY_ATTRIBUTES is ENOTTY (the test host, per kvmhost's differential tests).
	MemoryAttributes bool
	// HugeTLBGmem lets guest_memfd take GUEST_MEMFD_FLAG_HUGETLB (the
	// HugeTLB series; not upstream).
	HugeTLBGmem bool
	// InPlaceConversion lets a guest_memfd keep shared/private state itself
	// (the in-place conversion series), and then INIT_SHARED is allowed for
	// VMs with private memory too.
	InPlaceConversion bool
	// SplitFolioFirst is guest_memfd's rejected split_order=folio_first
	// policy (gmem.Config.SplitFolioFirst).
	SplitFolioFirst bool
	// PhysBits is the host's MAXPHYADDR: a memslot ending past it is
	// refused (kvm_mmu_max_gfn()).
	PhysBits uint
	// MemtypeZap is what a memory-type change (VM.ZapGFNRangeMemtype)
	// does to a TD; see MemtypeZapRule.
	MemtypeZap MemtypeZapRule
	// GmemContentModes is the in-place conversion series' RFC v5: an
	// in-place guest_memfd's KVM_SET_MEMORY_ATTRIBUTES2 takes ZERO and
	// PRESERVE (gmem.Config.ContentModes, contentModes) and
	// KVM_CAP_MEMORY_ATTRIBUTES2_FLAGS reports them. Off: flags must be 0
	// (v6 on dropped them).
	GmemContentModes bool
}

// MemtypeZapRule says how a memory-type change (non-coherent DMA
// assignment starting or stopping) reaches a TD's mappings.
type MemtypeZapRule uint8

const (
	// MemtypeZapSharedOnly (the model's default until now): the event runs
	// kvm_zap_gfn_range() over the direct (shared) root and spares the
	// mirror root, as "[PATCH v10 047/108] KVM: x86/tdp_mmu: Don't zap
	// private pages for unsupported cases" (2022) would have; that patch
	// was not merged in that form.
	MemtypeZapSharedOnly MemtypeZapRule = iota
	// MemtypeZapNone is the merged trees' rule for a TD (6.19, 7.0):
	// TDX disallows KVM_X86_QUIRK_IGNORE_GUEST_PAT, so
	// kvm_noncoherent_dma_assignment_start_or_stop() never calls
	// kvm_zap_gfn_range() (Kernel: arch/x86/kvm/x86.c; Series: "[PATCH v4
	// 00/28] KVM: x86/mmu: TDX post-populate cleanups",
	// 20251030200951.3402865-1-seanjc@google.com, the commit message of
	// "KVM: TDX: Use kvm_tdp_mmu_map_private_pfn() ..." lists the zap
	// paths a TD can reach). Guest MTRR writes no longer zap at all.
	// Nothing is zapped, no invalidation is bracketed.
	MemtypeZapNone
)

// String is the rule's name as profiles and docs spell it.
func (r MemtypeZapRule) String() string {
	return [...]string{"shared_only", "none"}[r]
}

// DefaultConfig is the modelled target: upstream KVM with TDX, memory
// attributes, and the HugeTLB and in-place conversion series available.
func DefaultConfig() Config {
	return Config{
		VMTypes:           1<<DefaultVM | 1<<SWProtectedVM | 1<<TDXVM,
		MemoryAttributes:  true,
		HugeTLBGmem:       true,
		InPlaceConversion: true,
		PhysBits:          52,
	}
}

// System is /dev/kvm: it creates VMs.
type System struct {
	cfg  Config
	mem  *hostmem.Memory
	sink event.Sink
	// mu guards vms and inos: VMs of one system are created, and their
	// guest_memfds, from any thread (the kernel's kvm_lock and the inode
	// allocator). A host mutex, never held across a yield.
	mu   sync.Mutex
	vms  int
	inos uint64 // guest_memfd inode numbers handed out
}

// NewSystem opens the modelled /dev/kvm over host memory mem.
func NewSystem(cfg Config, mem *hostmem.Memory, sink event.Sink) *System {
	if sink == nil {
		sink = event.Discard
	}
	if cfg.PhysBits == 0 {
		cfg.PhysBits = 52
	}
	return &System{cfg: cfg, mem: mem, sink: sink}
}

// Memory returns host memory.
func (s *System) Memory() *hostmem.Memory { return s.mem }

// Sink returns the event sink.
func (s *System) Sink() event.Sink { return s.sink }

// CheckExtension is KVM_CHECK_EXTENSION on /dev/kvm (kvm_vm_ioctl_check_extension_generic
// with no VM: the answers for a default VM).
func (s *System) CheckExtension(capability int) int {
	if capability == CapMemoryAttributes2Flags {
		// kvm_arch_gmem_supported_content_modes(NULL, ...): every mode.
		if !s.cfg.GmemContentModes || !s.cfg.InPlaceConversion {
			return 0
		}
		return int(gmem.ContentZero | gmem.ContentPreserve)
	}
	return s.checkExtension(DefaultVM, capability)
}

func (s *System) checkExtension(typ VMType, capability int) int {
	switch capability {
	case CapUserMemory2, CapMemoryFaultInfo, CapGuestMemfd:
		return 1
	case CapNrMemslots:
		return NrMemslots
	case CapMultiAddressSpace:
		return 0
	case CapReadonlyMem:
		if typ == TDXVM {
			return 0
		}
		return 1
	case CapVMTypes:
		return int(s.cfg.VMTypes)
	case CapMemoryAttributes:
		if s.cfg.MemoryAttributes && typ.hasPrivateMem() {
			return int(gmem.AttrPrivate)
		}
		return 0
	case CapGuestMemfdFlags:
		return int(s.gmemFlags(typ))
	case CapMemoryAttributes2Flags:
		// 0 while per-VM attributes are on (vm_memory_attributes);
		// else the modes with for_cap set, so TDX reports PRESERVE even
		// after finalize.
		if !s.cfg.GmemContentModes || !s.cfg.InPlaceConversion {
			return 0
		}
		return int(contentModes(typ, false, true, false))
	}
	return 0
}

// contentModes is RFC v5's kvm_arch_gmem_supported_content_modes(kvm,
// to_private, for_cap) for a VM of type typ whose pre_fault_allowed is
// preFault: a software-protected VM takes ZERO and PRESERVE; a TD takes
// ZERO, and PRESERVE only to private before KVM_TDX_FINALIZE_VM sets
// pre_fault_allowed (or when asked for the capability); other VMs none.
// Series: "[PATCH RFC v5 23/53] KVM: x86: Support SW_PROTECTED_VM in
// applying content modes", "[PATCH RFC v5 26/53] KVM: x86: Support SNP
// and TDX applying content modes"
// (20260428-gmem-inplace-conversion-v5-26-d8608ccfca22@google.com), patch
// 28's for_cap.
func contentModes(typ VMType, toPrivate, forCap, preFault bool) uint64 {
	switch typ {
	case SWProtectedVM:
		return gmem.ContentZero | gmem.ContentPreserve
	case TDXVM:
		m := gmem.ContentZero
		if forCap || (toPrivate && !preFault) {
			m |= gmem.ContentPreserve
		}
		return m
	}
	return 0
}

// SetPreFaultAllowed is kvm->arch.pre_fault_allowed = true, which
// tdx_td_finalize() sets when KVM_TDX_FINALIZE_VM succeeds (a TD may then
// fault, so RFC v5 takes PRESERVE no more).
func (vm *VM) SetPreFaultAllowed() { vm.preFaultAllowed.Store(true) }

// PreFaultAllowed reports kvm->arch.pre_fault_allowed.
func (vm *VM) PreFaultAllowed() bool { return vm.preFaultAllowed.Load() }

// gmemFlags is kvm_gmem_get_supported_flags().
func (s *System) gmemFlags(typ VMType) uint64 {
	f := gmem.FlagMMAP
	if !typ.hasPrivateMem() || s.cfg.InPlaceConversion {
		f |= gmem.FlagInitShared
	}
	if s.cfg.HugeTLBGmem {
		f |= gmem.FlagHugeTLB
	}
	return f
}

// CreateVM is KVM_CREATE_VM. Errors: a type not in KVM_CAP_VM_TYPES
// (EINVAL); no memory for the VM's account (ENOMEM).
func (s *System) CreateVM(t *sched.Thread, typ VMType) (*VM, error) {
	if typ >= 32 || s.cfg.VMTypes&(1<<typ) == 0 {
		return nil, errno.Newf("KVM_CREATE_VM", errno.EINVAL, "VM type %d not in KVM_CAP_VM_TYPES %#x", uint32(typ), s.cfg.VMTypes)
	}
	s.mu.Lock()
	s.vms++
	id := s.vms
	s.mu.Unlock()
	name := fmt.Sprintf("vm%d", id)
	acct, err := s.mem.NewAccount(name)
	if err != nil {
		return nil, errno.Wrap("KVM_CREATE_VM", errno.ENOMEM, err)
	}
	vm := &VM{
		sys: s, typ: typ, name: name, id: id, account: acct, sink: s.sink,
		refs:      1,
		slotsLock: sched.NewMutex("kvm.slots_lock"),
		mmuLock:   sched.NewRWLock("kvm.mmu_lock"),
		slotByID:  map[uint16]*Memslot{},
		mmu:       noMMU{},
		arch:      noArch{},
		vcpus:     map[uint32]*VCPU{},
	}
	vm.event(t, "KVM_CREATE_VM", uint64(typ), 0, "")
	return vm, nil
}

// VM is one struct kvm.
type VM struct {
	sys     *System
	typ     VMType
	name    string
	id      int
	account hostmem.Account
	sink    event.Sink

	refs      int      // the fd plus one per guest_memfd file (kvm_get_kvm)
	fd        fd.State // the VM fd
	destroyed bool     // kvm_destroy_vm ran
	bugged    bool     // KVM_BUG_ON fired (vm_bugged)
	dead      bool     // kvm_vm_dead: every ioctl gets EIO
	bugWhy    string

	slotsLock *sched.Mutex  // kvm->slots_lock
	mmuLock   *sched.RWLock // kvm->mmu_lock

	// slots are the memslots sorted by base GFN, replaced whole on every
	// change: readers (the fault path) load them without a lock, as the
	// kernel reads kvm->memslots under SRCU.
	slots    atomic.Pointer[[]*Memslot]
	slotByID map[uint16]*Memslot
	// attrs is kvm->mem_attr_array (gfn -> attributes). The fault path
	// reads it without mmu_lock (RCU xa_load in the kernel); attrsMu
	// makes those reads safe on real goroutines. Nothing under it yields.
	attrsMu sync.RWMutex
	attrs   rangemap.Map
	gmems   []*gmem.File
	// preFaultAllowed is kvm->arch.pre_fault_allowed (SetPreFaultAllowed).
	preFaultAllowed atomic.Bool

	// MMU invalidation (kvm->mmu_invalidate_*). invalSeq is read without
	// mmu_lock by a fault taking its snapshot (smp_rmb in the kernel);
	// the rest only under mmu_lock.
	invalSeq        atomic.Uint64
	invalInProgress int
	invalStart      addr.GFN
	invalEnd        addr.GFN

	// sharedBit is gfn_direct_bits: the GFN bit that marks a shared GPA
	// (TDX, set at KVM_TDX_INIT_VM). Zero when none.
	sharedBit addr.GFN

	mmu   MMU
	arch  Arch
	user  UserMemory
	vcpus map[uint32]*VCPU
}

// Type returns the VM type.
func (vm *VM) Type() VMType { return vm.typ }

// Name returns the VM's name ("vm1").
func (vm *VM) Name() string { return vm.name }

// ID returns the VM's number (1-based, in creation order).
func (vm *VM) ID() int { return vm.id }

// Account is the VM's memcg account (gmem.Owner).
func (vm *VM) Account() hostmem.Account { return vm.account }

// SlotsLock is kvm->slots_lock (gmem.Owner).
func (vm *VM) SlotsLock() *sched.Mutex { return vm.slotsLock }

// MMULock is kvm->mmu_lock.
func (vm *VM) MMULock() *sched.RWLock { return vm.mmuLock }

// Memory returns host memory.
func (vm *VM) Memory() *hostmem.Memory { return vm.sys.mem }

// Sink returns the event sink.
func (vm *VM) Sink() event.Sink { return vm.sink }

// HasPrivateMem is kvm_arch_has_private_mem().
func (vm *VM) HasPrivateMem() bool { return vm.typ.hasPrivateMem() }

// SetMMU installs the arch MMU (kvm/mmu) the VM calls for zaps and flushes.
func (vm *VM) SetMMU(m MMU) {
	if m == nil {
		m = noMMU{}
	}
	vm.mmu = m
}

// SetSharedBit sets gfn_direct_bits (KVM_TDX_INIT_VM: GPA bit 47 or 51).
func (vm *VM) SetSharedBit(gpaBit uint) { vm.sharedBit = addr.GFN(1) << (gpaBit - addr.PageShift) }

// SharedBit returns gfn_direct_bits as a GFN mask.
func (vm *VM) SharedBit() addr.GFN { return vm.sharedBit }

// Bugged reports whether KVM_BUG_ON fired, and why.
func (vm *VM) Bugged() (bool, string) { return vm.bugged, vm.bugWhy }

// Dead reports whether the VM is dead (vm_dead): every ioctl gets EIO.
func (vm *VM) Dead() bool { return vm.dead }

func (vm *VM) event(t *sched.Thread, name string, a0, a1 uint64, detail string) {
	ev := event.Event{Kind: event.KindKVM, Name: name, Args: [4]uint64{a0, a1, uint64(vm.id)}, Detail: detail}
	if t != nil {
		t.Stamp(&ev)
	}
	vm.sink.Emit(ev)
}

// ioctlGate is the prologue of kvm_vm_ioctl: a closed fd is EBADF, a dead
// VM is EIO.
func (vm *VM) ioctlGate(op string) error {
	if err := vm.fd.Check(op, "VM"); err != nil {
		return err
	}
	if vm.dead {
		return errno.Newf(op, errno.EIO, "VM is dead (%s)", vm.bugWhy)
	}
	return nil
}

// Bug is KVM_BUG_ON(cond, kvm) when cond holds: the first call WARNs
// (records why), marks the VM bugged and dead and asks every vCPU to stop.
// From then on every VM and vCPU ioctl returns EIO. It returns an EIO error
// for the caller to pass up.
func (vm *VM) Bug(t *sched.Thread, why string) error {
	if !vm.bugged {
		vm.bugged, vm.bugWhy = true, why
		vm.event(t, "KVM_BUG_ON", 0, 0, why)
		vm.markDead(t)
	}
	return errno.Newf("KVM_BUG_ON", errno.EIO, "%s", why)
}

// MarkDead is kvm_vm_dead() without a WARN (e.g. a TD touching memory it
// never accepted).
func (vm *VM) MarkDead(t *sched.Thread, why string) {
	if !vm.dead {
		vm.bugWhy = why
		vm.event(t, "kvm_vm_dead", 0, 0, why)
		vm.markDead(t)
	}
}

func (vm *VM) markDead(t *sched.Thread) {
	vm.dead = true
	for _, v := range vm.vcpus { // setting a flag: order does not matter
		v.requestDead = true // KVM_REQ_VM_DEAD
	}
}

// CheckExtension is KVM_CHECK_EXTENSION on the VM fd.
func (vm *VM) CheckExtension(capability int) (int, error) {
	if err := vm.ioctlGate("KVM_CHECK_EXTENSION"); err != nil {
		return 0, err
	}
	return vm.sys.checkExtension(vm.typ, capability), nil
}

// CreateGuestMemfd is KVM_CREATE_GUEST_MEMFD. Kernel: kvm_gmem_create()
// with the VM's supported flags; the file holds a reference on the VM.
// InPlace needs Config.InPlaceConversion (EINVAL otherwise).
func (vm *VM) CreateGuestMemfd(t *sched.Thread, a gmem.CreateArgs) (*gmem.File, error) {
	const op = "KVM_CREATE_GUEST_MEMFD"
	if err := vm.ioctlGate(op); err != nil {
		return nil, err
	}
	if a.InPlace && !vm.sys.cfg.InPlaceConversion {
		return nil, errno.New(op, errno.EINVAL, "in-place conversion is not enabled on this host")
	}
	vm.sys.mu.Lock()
	vm.sys.inos++
	ino := vm.sys.inos
	vm.sys.mu.Unlock()
	gcfg := gmem.Config{SupportedFlags: vm.sys.gmemFlags(vm.typ), Ino: ino, SplitFolioFirst: vm.sys.cfg.SplitFolioFirst}
	if vm.sys.cfg.GmemContentModes {
		gcfg.ContentModes = func(toPrivate bool) uint64 { return contentModes(vm.typ, toPrivate, false, vm.PreFaultAllowed()) }
	}
	f, err := gmem.Create(t, vm.sys.mem, vm, gcfg, a, vm.sink)
	if err != nil {
		return nil, err
	}
	vm.refs++ // kvm_get_kvm
	vm.gmems = append(vm.gmems, f)
	return f, nil
}

// PutRef drops a reference on the VM (kvm_put_kvm); the last one destroys
// it (gmem.Owner).
func (vm *VM) PutRef(t *sched.Thread) {
	vm.refs--
	if vm.refs == 0 {
		vm.destroy(t)
	}
}

// Close closes the VM fd. The VM lives on while a guest_memfd holds it
// (kvmhost's differential tests: "the gmem keeps the VM alive").
func (vm *VM) Close(t *sched.Thread) error {
	if err := vm.fd.Close("VM"); err != nil {
		return err
	}
	vm.PutRef(t)
	return nil
}

// Destroyed reports whether kvm_destroy_vm ran.
func (vm *VM) Destroyed() bool { return vm.destroyed }

// destroy is kvm_destroy_vm, in the kernel's order: the arch pre-destroy
// (TDX releases the HKID), the MMU-notifier release (zap the direct roots),
// the vCPUs (TDX reclaims their TDVPR pages), the MMU (the mirror root's
// page tables, whose S-EPT pages TDX reclaims), the arch VM (TDX reclaims
// TDCS and TDR), and finally every memslot (unbinding its guest_memfd).
// guest_memfd files hold a reference on the VM, so by now every one of them
// was released and zapped its private leaves while the HKID was assigned.
func (vm *VM) destroy(t *sched.Thread) {
	vm.arch.PreDestroyVM(t)
	vm.mmu.ZapAll(t)
	vm.arch.DestroyVCPUs(t)
	vm.mmu.Destroy(t)
	vm.arch.DestroyVM(t)
	vm.slotsLock.Lock(t)
	for slots := vm.slotList(); len(slots) > 0; slots = vm.slotList() {
		s := slots[len(slots)-1]
		vm.removeSlot(s)
		if f := s.file; f != nil {
			f.Unbind(t, s)
		}
	}
	vm.slotsLock.Unlock(t)
	vm.destroyed = true
	vm.event(t, "kvm_destroy_vm", 0, 0, "")
}

// MMU is what the VM needs from the arch MMU (kvm/mmu). UnmapGFNRange,
// SplitCrossBoundary and FlushRemoteTLBs are called with mmu_lock held for
// write, as the kernel asserts; the others take mmu_lock themselves.
type MMU interface {
	// UnmapGFNRange zaps leaf SPTEs of r in the roots r.Filter selects
	// (kvm_unmap_gfn_range / kvm_tdp_mmu_unmap_gfn_range) and reports
	// whether TLBs must be flushed.
	UnmapGFNRange(t *sched.Thread, r gmem.Range) bool
	// SplitCrossBoundary splits private huge leaves straddling r's edges
	// (kvm_split_cross_boundary_leafs).
	SplitCrossBoundary(t *sched.Thread, r gmem.Range) error
	// TopUpSplitCache fills the per-VM split cache before mmu_lock is
	// taken for a SplitCrossBoundary (ENOMEM when it cannot).
	TopUpSplitCache(t *sched.Thread) error
	// FlushShadowMemslot zaps what a deleted or moved slot mapped
	// (kvm_arch_flush_shadow_memslot).
	FlushShadowMemslot(t *sched.Thread, s *Memslot)
	// FlushRemoteTLBs is kvm_flush_remote_tlbs.
	FlushRemoteTLBs(t *sched.Thread)
	// ZapAll is the MMU-notifier release (kvm_arch_flush_shadow_all ->
	// kvm_tdp_mmu_zap_all): direct roots only.
	ZapAll(t *sched.Thread)
	// ZapGFNRange is kvm_zap_gfn_range, used for memory-type changes.
	ZapGFNRange(t *sched.Thread, start, end addr.GFN)
	// Destroy frees every root and page table (kvm_mmu_uninit_tdp_mmu).
	Destroy(t *sched.Thread)
}

// Arch is the VM's arch-specific teardown (struct kvm_x86_ops: vm_pre_destroy,
// vcpu_free, vm_destroy), installed by kvm/tdx for TDs.
type Arch interface {
	// PreDestroyVM runs first (tdx_mmu_release_hkid).
	PreDestroyVM(t *sched.Thread)
	// DestroyVCPUs frees the vCPUs' arch state (tdx_vcpu_free).
	DestroyVCPUs(t *sched.Thread)
	// DestroyVM frees the VM's arch state last (tdx_vm_destroy).
	DestroyVM(t *sched.Thread)
}

type noArch struct{}

func (noArch) PreDestroyVM(*sched.Thread) {}
func (noArch) DestroyVCPUs(*sched.Thread) {}
func (noArch) DestroyVM(*sched.Thread)    {}

// SetArch installs the arch teardown hooks.
func (vm *VM) SetArch(a Arch) {
	if a == nil {
		a = noArch{}
	}
	vm.arch = a
}

// UserMemory is the VMM process's address space as KVM reaches it for a
// shared fault on a memslot that is not gmem-only (hva_to_pfn -> GUP).
type UserMemory interface {
	// GetUserPage returns the page at hva with a reference the caller drops
	// with hostmem's Put, populating it on first touch. An address with no
	// mapping is an error (KVM_PFN_ERR_FAULT).
	GetUserPage(t *sched.Thread, hva uint64, write bool) (addr.PFN, error)
}

// SetUserMemory installs the VMM's address space.
func (vm *VM) SetUserMemory(u UserMemory) { vm.user = u }

// UserMemory returns the VMM's address space (nil when none was set).
func (vm *VM) UserMemory() UserMemory { return vm.user }

type noMMU struct{}

func (noMMU) UnmapGFNRange(*sched.Thread, gmem.Range) bool       { return false }
func (noMMU) SplitCrossBoundary(*sched.Thread, gmem.Range) error { return nil }
func (noMMU) TopUpSplitCache(*sched.Thread) error                { return nil }
func (noMMU) FlushShadowMemslot(*sched.Thread, *Memslot)         {}
func (noMMU) FlushRemoteTLBs(*sched.Thread)                      {}
func (noMMU) ZapAll(*sched.Thread)                               {}
func (noMMU) ZapGFNRange(*sched.Thread, addr.GFN, addr.GFN)      {}
func (noMMU) Destroy(*sched.Thread)                              {}

// CreateGuestMemfd on /dev/kvm itself: it is a VM ioctl, and the system
// ioctl handler answers unknown numbers with EINVAL (kvm_arch_dev_ioctl;
// as kvmhost's differential tests see on the real kernel).
func (s *System) CreateGuestMemfd(t *sched.Thread, a gmem.CreateArgs) (*gmem.File, error) {
	return nil, errno.New("KVM_CREATE_GUEST_MEMFD", errno.EINVAL, "a VM ioctl issued on /dev/kvm")
}

// Closed reports whether the VM fd was closed.
func (vm *VM) Closed() bool { return vm.fd.Closed() }

// ErrSplitCacheLow is what a split of a private huge mapping returns,
// having changed nothing, when the per-VM split cache cannot cover it
// under mmu_lock: the caller drops mmu_lock, tops the cache up and tries
// again (the invalidation it holds keeps faults out meanwhile).
var ErrSplitCacheLow = errors.New("split cache needs a top-up")
