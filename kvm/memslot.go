package kvm

import (
	"sort"
	"sync/atomic"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/internal/mutation"
	"github.com/tdxsim/tdxsim/sched"
)

// FD is what the guest_memfd field of a memory region refers to. The zero
// value is a number that is not an open file (EBADF).
type FD struct {
	File  *gmem.File // a guest_memfd
	Other string     // some other open file ("/dev/null", "memfd"): EINVAL
}

// Region is struct kvm_userspace_memory_region2.
type Region struct {
	Slot             uint32 // address space in bits 16..31, slot id below
	Flags            uint32
	GuestPhysAddr    uint64
	MemorySize       uint64
	UserspaceAddr    uint64
	GuestMemfdOffset uint64
	GuestMemfd       FD
	Pad1             uint32     // not checked (the real kernel, per kvmhost's differential tests)
	Pad2             [14]uint64 // not checked
}

// Memslot is one struct kvm_memory_slot.
type Memslot struct {
	id       uint16
	base     addr.GFN
	npages   uint64
	flags    uint32
	userAddr uint64
	invalid  atomic.Bool // KVM_MEMSLOT_INVALID while being deleted or moved

	file     *gmem.File // slot->gmem.file
	pgoff    uint64     // slot->gmem.pgoff
	gmemOnly bool       // KVM_MEMSLOT_GMEM_ONLY: bound to a FlagMMAP file

	// lpage[0] is 2 MiB, lpage[1] 1 GiB: disallow_lpage per huge page
	// overlapping the slot; bit 31 is KVM_LPAGE_MIXED_FLAG.
	lpage [2][]uint32
}

// lpageMixed is KVM_LPAGE_MIXED_FLAG.
const lpageMixed = 1 << 31

// lpageGuestInhibit is KVM_LPAGE_GUEST_INHIBIT_FLAG (TDX huge-page series,
// "KVM: x86: Introduce hugepage_set_guest_inhibit()"): the guest accepted
// part of this huge page at a smaller level, so KVM never maps it at this
// level again. Nothing clears it while the slot lives.
const lpageGuestInhibit = 1 << 30

// ID returns the slot id.
func (s *Memslot) ID() uint16 { return s.id }

// BaseGFN returns the first GFN (gmem.Slot).
func (s *Memslot) BaseGFN() addr.GFN { return s.base }

// NPages returns the size in pages (gmem.Slot).
func (s *Memslot) NPages() uint64 { return s.npages }

// EndGFN returns the GFN after the slot.
func (s *Memslot) EndGFN() addr.GFN { return s.base + addr.GFN(s.npages) }

// Flags returns the slot's KVM_MEM_* flags.
func (s *Memslot) Flags() uint32 { return s.flags }

// UserspaceAddr returns the slot's userspace_addr.
func (s *Memslot) UserspaceAddr() uint64 { return s.userAddr }

// GmemFile returns slot->gmem.file (gmem.Slot).
func (s *Memslot) GmemFile() *gmem.File { return s.file }

// GmemPGOff returns slot->gmem.pgoff (gmem.Slot).
func (s *Memslot) GmemPGOff() uint64 { return s.pgoff }

// ClearGmemFile forgets the file (gmem.Slot; kvm_gmem_release).
func (s *Memslot) ClearGmemFile() { s.file = nil }

// HasGmem is kvm_slot_has_gmem(): the slot was created with
// KVM_MEM_GUEST_MEMFD (even if its file was since released).
func (s *Memslot) HasGmem() bool { return s.flags&MemGuestMemfd != 0 }

// GmemOnly reports KVM_MEMSLOT_GMEM_ONLY: guest accesses go to guest_memfd
// even when shared, userspace_addr is not used (the real kernel, per kvmhost's differential tests).
func (s *Memslot) GmemOnly() bool { return s.gmemOnly }

// Invalid reports KVM_MEMSLOT_INVALID (being deleted or moved).
func (s *Memslot) Invalid() bool { return s.invalid.Load() }

// Slots returns the memslots in GFN order.
func (vm *VM) Slots() []*Memslot { return append([]*Memslot(nil), vm.slotList()...) }

// slotList is the current memslot array (read-only).
func (vm *VM) slotList() []*Memslot {
	if p := vm.slots.Load(); p != nil {
		return *p
	}
	return nil
}

// SlotAt returns the memslot holding gfn (gfn_to_memslot), or nil.
func (vm *VM) SlotAt(gfn addr.GFN) *Memslot {
	slots := vm.slotList()
	i := sort.Search(len(slots), func(i int) bool { return slots[i].EndGFN() > gfn })
	if i < len(slots) && slots[i].base <= gfn {
		return slots[i]
	}
	return nil
}

// SetUserMemoryRegion is the legacy KVM_SET_USER_MEMORY_REGION: the same
// as version 2 without the guest_memfd fields, and KVM_MEM_GUEST_MEMFD (or
// any flag beyond LOG_DIRTY_PAGES|READONLY) is EINVAL.
func (vm *VM) SetUserMemoryRegion(t *sched.Thread, r Region) error {
	const op = "KVM_SET_USER_MEMORY_REGION"
	if err := vm.ioctlGate(op); err != nil {
		return err
	}
	if r.Flags&^(MemLogDirtyPages|MemReadonly) != 0 {
		return errno.Newf(op, errno.EINVAL, "flags %#x: the v1 ioctl takes only LOG_DIRTY_PAGES and READONLY", r.Flags)
	}
	r.GuestMemfd, r.GuestMemfdOffset = FD{}, 0
	return vm.setMemoryRegion(t, op, r)
}

// SetUserMemoryRegion2 is KVM_SET_USER_MEMORY_REGION2: create, delete (size
// 0), move or change the flags of a memslot, binding a guest_memfd range
// when KVM_MEM_GUEST_MEMFD is set. Kernel: kvm_set_memory_region() and
// kvm_gmem_bind(), with the checks in the kernel's order (virt/kvm/guest_memfd.c kvm_gmem_bind(),
// and kvmhost's differential tests).
func (vm *VM) SetUserMemoryRegion2(t *sched.Thread, r Region) error {
	return vm.setMemoryRegion(t, "KVM_SET_USER_MEMORY_REGION2", r)
}

func (vm *VM) setMemoryRegion(t *sched.Thread, op string, r Region) error {
	if err := vm.ioctlGate(op); err != nil {
		return err
	}
	vm.slotsLock.Lock(t)
	defer vm.slotsLock.Unlock(t)
	err := vm.setMemoryRegionLocked(t, op, r)
	vm.event(t, op, uint64(r.Slot), r.GuestPhysAddr, errno.Of(err).String())
	return err
}

// checkFlags is check_memory_region_flags().
func (vm *VM) checkFlags(op string, flags uint32) error {
	valid := MemLogDirtyPages | MemGuestMemfd
	if flags&MemGuestMemfd != 0 {
		valid &^= MemLogDirtyPages // dirty logging of private memory is unsupported
	}
	// GUEST_MEMFD is incompatible with read-only slots, and VMs with
	// protected state (TDX) have no read-only memory.
	if vm.typ != TDXVM && flags&MemGuestMemfd == 0 {
		valid |= MemReadonly
	}
	if flags&^valid != 0 {
		return errno.Newf(op, errno.EINVAL, "flags %#x outside the valid %#x", flags, valid)
	}
	return nil
}

func (vm *VM) setMemoryRegionLocked(t *sched.Thread, op string, r Region) error {
	if err := vm.checkFlags(op, r.Flags); err != nil {
		return err
	}
	asID, id := r.Slot>>16, uint16(r.Slot)
	switch {
	case r.MemorySize%addr.PageSize != 0:
		return errno.Newf(op, errno.EINVAL, "memory_size %#x is not page aligned", r.MemorySize)
	case r.GuestPhysAddr%addr.PageSize != 0:
		return errno.Newf(op, errno.EINVAL, "guest_phys_addr %#x is not page aligned", r.GuestPhysAddr)
	case r.UserspaceAddr%addr.PageSize != 0:
		return errno.Newf(op, errno.EINVAL, "userspace_addr %#x is not page aligned", r.UserspaceAddr)
	case r.UserspaceAddr > taskSizeMax || r.MemorySize > taskSizeMax-r.UserspaceAddr:
		return errno.Newf(op, errno.EINVAL, "userspace_addr %#x + size %#x is not a user address range (access_ok)", r.UserspaceAddr, r.MemorySize)
	case r.Flags&MemGuestMemfd != 0 && (r.GuestMemfdOffset%addr.PageSize != 0 || r.GuestMemfdOffset+r.MemorySize < r.GuestMemfdOffset):
		return errno.Newf(op, errno.EINVAL, "guest_memfd_offset %#x is unaligned or offset+size wraps", r.GuestMemfdOffset)
	case asID != 0 || uint32(id) >= NrMemslots:
		return errno.Newf(op, errno.EINVAL, "slot %#x: address space %d / id %d out of range (%d slots, 1 address space)", r.Slot, asID, id, NrMemslots)
	case r.GuestPhysAddr+r.MemorySize < r.GuestPhysAddr:
		return errno.New(op, errno.EINVAL, "guest_phys_addr + memory_size wraps")
	case r.MemorySize>>addr.PageShift > MaxSlotPages:
		return errno.Newf(op, errno.EINVAL, "memory_size %#x is more than KVM_MEM_MAX_NR_PAGES pages", r.MemorySize)
	}
	old := vm.slotByID[id]
	if r.MemorySize == 0 {
		if old == nil {
			return errno.Newf(op, errno.EINVAL, "delete of slot %d, which does not exist", id)
		}
		vm.deleteSlot(t, old)
		return nil
	}
	base, npages := addr.GFN(r.GuestPhysAddr>>addr.PageShift), r.MemorySize>>addr.PageShift
	move := false
	if old != nil {
		// Modify an existing slot. guest_memfd slots are immutable:
		// they can only be deleted.
		if r.Flags&MemGuestMemfd != 0 {
			return errno.Newf(op, errno.EINVAL, "slot %d exists and guest_memfd slots can only be deleted", id)
		}
		if r.UserspaceAddr != old.userAddr || npages != old.npages || (r.Flags^old.flags)&(MemReadonly|MemGuestMemfd) != 0 {
			return errno.Newf(op, errno.EINVAL, "slot %d: userspace_addr, size, READONLY and GUEST_MEMFD cannot change", id)
		}
		switch {
		case base != old.base:
			move = true
		case r.Flags != old.flags:
			old.flags = r.Flags // KVM_MR_FLAGS_ONLY (dirty logging on/off)
			return nil
		default:
			return nil // nothing to change
		}
	}
	if vm.overlaps(id, base, base+addr.GFN(npages)) {
		return errno.Newf(op, errno.EEXIST, "GPA range [%#x, %#x) overlaps another memslot", r.GuestPhysAddr, r.GuestPhysAddr+r.MemorySize)
	}
	// kvm_arch_prepare_memory_region (x86).
	last := base + addr.GFN(npages) - 1
	if uint64(last) >= 1<<(vm.sys.cfg.PhysBits-addr.PageShift) {
		return errno.Newf(op, errno.EINVAL, "GPA range ends past the host's %d physical address bits", vm.sys.cfg.PhysBits)
	}
	if vm.sharedBit != 0 && last&vm.sharedBit != 0 {
		return errno.New(op, errno.EINVAL, "memslot reaches the shared-bit alias of private memory (kvm_is_gfn_alias)")
	}
	if move {
		vm.moveSlot(t, old, base)
		return nil
	}
	s := &Memslot{id: id, base: base, npages: npages, flags: r.Flags, userAddr: r.UserspaceAddr}
	if r.Flags&MemGuestMemfd != 0 {
		f := r.GuestMemfd.File
		switch {
		case f == nil && r.GuestMemfd.Other == "":
			return errno.New(op, errno.EBADF, "guest_memfd is not an open fd")
		case f == nil:
			return errno.Newf(op, errno.EINVAL, "guest_memfd refers to %s, not a guest_memfd", r.GuestMemfd.Other)
		}
		if err := f.Bind(t, vm, s, r.GuestMemfdOffset); err != nil {
			return err
		}
		s.file, s.pgoff = f, r.GuestMemfdOffset>>addr.PageShift
		s.gmemOnly = f.Flags()&gmem.FlagMMAP != 0
	}
	vm.initLpage(s)
	vm.insertSlot(s)
	return nil
}

func (vm *VM) overlaps(id uint16, start, end addr.GFN) bool {
	for _, s := range vm.slotList() {
		if s.id != id && s.base < end && start < s.EndGFN() {
			return true
		}
	}
	return false
}

func (vm *VM) insertSlot(s *Memslot) {
	old := vm.slotList()
	i := sort.Search(len(old), func(i int) bool { return old[i].base > s.base })
	slots := make([]*Memslot, 0, len(old)+1)
	slots = append(append(append(slots, old[:i]...), s), old[i:]...)
	vm.slots.Store(&slots)
	vm.slotByID[s.id] = s
}

func (vm *VM) removeSlot(s *Memslot) {
	old := vm.slotList()
	slots := make([]*Memslot, 0, len(old))
	for _, x := range old {
		if x != s {
			slots = append(slots, x)
		}
	}
	vm.slots.Store(&slots)
	delete(vm.slotByID, s.id)
}

// deleteSlot is kvm_set_memslot(KVM_MR_DELETE): the slot is marked invalid
// so faults retry, the arch MMU zaps what it mapped (for TDX private and
// shared leaves; kvm_arch_flush_shadow_memslot), then the slot goes and its
// guest_memfd binding is dropped (kvm_free_memslot -> kvm_gmem_unbind).
func (vm *VM) deleteSlot(t *sched.Thread, s *Memslot) {
	s.invalid.Store(true)
	vm.mmu.FlushShadowMemslot(t, s)
	vm.removeSlot(s)
	if f := s.file; f != nil {
		f.Unbind(t, s)
	}
}

// moveSlot is KVM_MR_MOVE (never for guest_memfd slots).
func (vm *VM) moveSlot(t *sched.Thread, s *Memslot, base addr.GFN) {
	s.invalid.Store(true)
	vm.mmu.FlushShadowMemslot(t, s)
	vm.removeSlot(s)
	s.base = base
	s.invalid.Store(false)
	vm.initLpage(s)
	vm.insertSlot(s)
}

// initLpage is the lpage_info part of kvm_alloc_memslot_metadata() and
// kvm_mmu_init_memslot_memory_attributes(): huge pages cut by the slot's
// edges, or whose GFN and userspace address disagree in alignment, are
// disallowed; the others are MIXED when their attributes are.
func (vm *VM) initLpage(s *Memslot) {
	for li := 0; li < 2; li++ {
		shift := 9 * uint(li+1)
		per := uint64(1) << shift
		first := uint64(s.base) >> shift
		last := (uint64(s.base) + s.npages - 1) >> shift
		n := last - first + 1
		lp := make([]uint32, n)
		if uint64(s.base)&(per-1) != 0 {
			lp[0] = 1
		}
		if (uint64(s.base)+s.npages)&(per-1) != 0 {
			lp[n-1] = 1
		}
		if (uint64(s.base)^(s.userAddr>>addr.PageShift))&(per-1) != 0 {
			for j := range lp {
				lp[j] = 1
			}
		}
		s.lpage[li] = lp
	}
	if !vm.typ.hasPrivateMem() {
		return
	}
	for li := 0; li < 2; li++ {
		level := addr.Level(li + 1)
		per := level.Pages()
		for g := (uint64(s.base) + per - 1) &^ (per - 1); g+per <= uint64(s.EndGFN()); g += per {
			vm.setMixed(s, level, addr.GFN(g), !vm.hugePageUniform(s, level, addr.GFN(g)))
		}
	}
}

func (s *Memslot) lpageIndex(level addr.Level, gfn addr.GFN) uint64 {
	shift := 9 * uint(level)
	return uint64(gfn)>>shift - uint64(s.base)>>shift
}

func (vm *VM) setMixed(s *Memslot, level addr.Level, gfn addr.GFN, mixed bool) {
	p := &s.lpage[level-1][s.lpageIndex(level, gfn)]
	if mixed {
		atomic.OrUint32(p, lpageMixed)
	} else {
		atomic.AndUint32(p, ^uint32(lpageMixed))
	}
}

// Mixed reports whether the huge page of level holding gfn has mixed
// attributes (KVM_LPAGE_MIXED_FLAG).
func (s *Memslot) Mixed(level addr.Level, gfn addr.GFN) bool {
	if level == addr.Level4K || level > addr.Level1G {
		return false
	}
	return atomic.LoadUint32(&s.lpage[level-1][s.lpageIndex(level, gfn)])&lpageMixed != 0
}

// SetGuestInhibit marks the huge page of level holding gfn as never to be
// mapped at level again (hugepage_set_guest_inhibit()). Huge pages cut by
// the slot's edges are disallowed anyway and are left alone. The caller
// holds mmu_lock for write.
func (s *Memslot) SetGuestInhibit(level addr.Level, gfn addr.GFN) {
	if level == addr.Level4K || level > addr.Level1G || gfn < s.base || gfn >= s.EndGFN() {
		return
	}
	atomic.OrUint32(&s.lpage[level-1][s.lpageIndex(level, gfn)], lpageGuestInhibit)
}

// GuestInhibited reports whether SetGuestInhibit was called for the huge
// page of level holding gfn (hugepage_test_guest_inhibit()).
func (s *Memslot) GuestInhibited(level addr.Level, gfn addr.GFN) bool {
	if level == addr.Level4K || level > addr.Level1G || gfn < s.base || gfn >= s.EndGFN() {
		return false
	}
	return atomic.LoadUint32(&s.lpage[level-1][s.lpageIndex(level, gfn)])&lpageGuestInhibit != 0
}

// HugePageAllowedBeforeInhibit is HugePageAllowed as if the guest had
// never inhibited the huge page: what kvm_mmu_max_mapping_level() would
// allow without the accept-level rule of the TDX huge-page series (the
// question behind its "guest accepts at 4KB when KVM can map at 2MB"
// count, Series: Yan Zhao in "Re: [RFC PATCH 09/21] KVM: TDX: Enable
// 2MB mapping size after TD is RUNNABLE",
// aGNK2tO2W6+GWtt3@yzhao56-desk.sh.intel.com).
func (s *Memslot) HugePageAllowedBeforeInhibit(level addr.Level, gfn addr.GFN) bool {
	if level == addr.Level4K {
		return true
	}
	if level > addr.Level1G {
		return false
	}
	return atomic.LoadUint32(&s.lpage[level-1][s.lpageIndex(level, gfn)])&^lpageGuestInhibit == 0
}

// HugePageAllowed reports whether KVM may map gfn at level as far as the
// slot is concerned: the huge page lies inside the slot, the GFN and
// userspace address agree in alignment, the attributes are not mixed and
// the guest has not inhibited it (lpage_info disallow_lpage == 0).
func (s *Memslot) HugePageAllowed(level addr.Level, gfn addr.GFN) bool {
	if level == addr.Level4K {
		return true
	}
	if level > addr.Level1G {
		return false
	}
	flags := atomic.LoadUint32(&s.lpage[level-1][s.lpageIndex(level, gfn)])
	if mutation.On(mutation.MapHugeOverMixed) {
		flags &^= lpageMixed
	}
	return flags == 0
}
