package kvm

import (
	"fmt"
	"sort"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/sched"
)

// VCPU is one struct kvm_vcpu, as far as this package needs it: it exists,
// it stops when the VM dies, and its faults resolve GFNs to PFNs.
type VCPU struct {
	vm          *VM
	id          uint32
	requestDead bool // KVM_REQ_VM_DEAD pending
	mutex       *sched.Mutex
}

// CreateVCPU is KVM_CREATE_VCPU. Errors: dead VM (EIO), id out of range
// (EINVAL), id in use (EEXIST).
func (vm *VM) CreateVCPU(t *sched.Thread, id uint32) (*VCPU, error) {
	const op = "KVM_CREATE_VCPU"
	if err := vm.ioctlGate(op); err != nil {
		return nil, err
	}
	if id >= MaxVCPUIDs {
		return nil, errno.Newf(op, errno.EINVAL, "vcpu id %d >= KVM_MAX_VCPU_IDS %d", id, MaxVCPUIDs)
	}
	if vm.vcpus[id] != nil {
		return nil, errno.Newf(op, errno.EEXIST, "vcpu id %d exists", id)
	}
	v := &VCPU{vm: vm, id: id, mutex: sched.NewMutex("vcpu.mutex")}
	vm.vcpus[id] = v
	return v, nil
}

// VCPUs returns the vCPUs in id order.
func (vm *VM) VCPUs() []*VCPU {
	out := make([]*VCPU, 0, len(vm.vcpus))
	for _, id := range sortedVCPUIDs(vm.vcpus) {
		out = append(out, vm.vcpus[id])
	}
	return out
}

func sortedVCPUIDs(m map[uint32]*VCPU) []uint32 {
	ids := make([]uint32, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// ID returns the vCPU id.
func (v *VCPU) ID() uint32 { return v.id }

// VM returns the vCPU's VM.
func (v *VCPU) VM() *VM { return v.vm }

// Mutex is vcpu->mutex.
func (v *VCPU) Mutex() *sched.Mutex { return v.mutex }

// CheckRequests is the request check at the top of vcpu_run: a dead VM
// makes KVM_RUN fail with EIO and the vCPU stop.
func (v *VCPU) CheckRequests() error {
	if v.requestDead || v.vm.dead {
		return errno.Newf("KVM_RUN", errno.EIO, "VM is dead (%s)", v.vm.bugWhy)
	}
	return nil
}

// MemoryFault is the KVM_EXIT_MEMORY_FAULT exit userspace sees when KVM
// cannot resolve a guest access (kvm_mmu_prepare_memory_fault_exit). It is
// an error carrying the errno KVM_RUN returns (EFAULT, or the guest_memfd's
// error such as EHWPOISON).
type MemoryFault struct {
	GPA, Size uint64
	Private   bool // KVM_MEMORY_EXIT_FLAG_PRIVATE
	Errno     errno.Errno
	Why       string
	// Cause is the error KVM met resolving the access (guest_memfd's,
	// or the host's fault on the HVA), nil for a rule KVM enforces
	// itself; errors.Is and errors.As see through to it.
	Cause error
}

func (e *MemoryFault) Error() string {
	kind := "shared"
	if e.Private {
		kind = "private"
	}
	return fmt.Sprintf("KVM_RUN: %s: KVM_EXIT_MEMORY_FAULT gpa %#x size %#x %s: %s", e.Errno, e.GPA, e.Size, kind, e.Why)
}

// Unwrap returns the errno and the cause.
func (e *MemoryFault) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Errno}
	}
	return []error{e.Errno, e.Cause}
}

// ErrRetry is RET_PF_RETRY: the fault raced with something and the vCPU
// simply re-enters the guest.
var ErrRetry = fmt.Errorf("RET_PF_RETRY")

// Fault is a guest access resolved to a page (struct kvm_page_fault after
// kvm_mmu_faultin_pfn).
type Fault struct {
	GFN     addr.GFN
	Private bool
	Slot    *Memslot
	// Seq is mmu_invalidate_seq snapshotted before the lookup; the MMU
	// checks InvalidateRetry(Seq, GFN) under mmu_lock before it maps.
	Seq uint64
	// PFN and MaxOrder come from guest_memfd for private faults (and for
	// shared faults on gmem-only slots). The caller owns a reference on
	// PFN and drops it with hostmem's Put after mapping.
	PFN      addr.PFN
	MaxOrder addr.Order
	// MappingOrder is guest_memfd's answer (kvm_gmem_mapping_order).
	MappingOrder addr.Order
	// HVA is the userspace address for a shared fault on a slot that is
	// not gmem-only; the VMM's memory there backs the access, and PFN is
	// its page when the VM has UserMemory.
	HVA    uint64
	HasPFN bool
}

// FaultInPFN resolves a guest access to gfn. Kernel: the memslot and
// private checks of kvm_tdp_page_fault and kvm_mmu_faultin_pfn(): snapshot
// the invalidation sequence; a slot being deleted retries; a private access
// to a shared GFN or the reverse exits to userspace (memory fault, EFAULT);
// a private access needs a guest_memfd slot (else memory fault, EFAULT) and
// gets its page from kvm_gmem_get_pfn (its errors become memory faults).
// Accesses outside every slot are emulated MMIO in the kernel; here they
// are a memory fault with EFAULT.
func (v *VCPU) FaultInPFN(t *sched.Thread, gfn addr.GFN, private bool) (Fault, error) {
	if err := v.CheckRequests(); err != nil {
		return Fault{}, err
	}
	vm := v.vm
	f := Fault{GFN: gfn, Private: private, Seq: vm.invalSeq.Load()}
	mf := func(e errno.Errno, why string, cause ...error) error {
		err := &MemoryFault{GPA: uint64(gfn) << addr.PageShift, Size: addr.PageSize, Private: private, Errno: e, Why: why}
		if len(cause) > 0 {
			err.Cause = cause[0]
		}
		return err
	}
	s := vm.SlotAt(gfn)
	if s != nil && s.invalid.Load() {
		return f, ErrRetry
	}
	if private != vm.IsPrivate(gfn) {
		return f, mf(errno.EFAULT, "access does not match the GFN's private attribute")
	}
	if s == nil {
		return f, mf(errno.EFAULT, "no memslot")
	}
	f.Slot = s
	if private || s.gmemOnly {
		if !s.HasGmem() {
			return f, mf(errno.EFAULT, "private access to a memslot without guest_memfd")
		}
		p, err := gmem.GetPFN(t, s, gfn)
		if err != nil {
			return f, mf(errno.Of(err), err.Error(), err)
		}
		f.PFN, f.MaxOrder, f.HasPFN = p.PFN, p.MaxOrder, true
		f.MappingOrder = gmem.MappingOrder(s, gfn)
		return f, nil
	}
	f.HVA = s.userAddr + uint64(gfn-s.base)<<addr.PageShift
	if vm.user != nil {
		p, err := vm.user.GetUserPage(t, f.HVA, true)
		if err != nil {
			return f, mf(errno.EFAULT, fmt.Sprintf("hva %#x: %v", f.HVA, err), err)
		}
		f.PFN, f.HasPFN = p, true
	}
	return f, nil
}
