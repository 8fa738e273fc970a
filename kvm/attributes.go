package kvm

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/sched"
)

// MemoryAttributes is struct kvm_memory_attributes.
type MemoryAttributes struct {
	Address    uint64
	Size       uint64
	Attributes uint64
	Flags      uint64
}

// supportedAttributes is kvm_supported_mem_attributes().
func (vm *VM) supportedAttributes() uint64 {
	if vm.typ.hasPrivateMem() {
		return gmem.AttrPrivate
	}
	return 0
}

// SetMemoryAttributes is KVM_SET_MEMORY_ATTRIBUTES: give a GPA range the
// PRIVATE attribute or take it away. Kernel: kvm_vm_ioctl_set_mem_attributes()
// and kvm_vm_set_mem_attributes() with the x86 pre/post hooks. Errors in the
// kernel's order: the host lacks CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES
// (ENOTTY); flags (EINVAL); unsupported attributes (EINVAL); size 0 or a
// wrapping range (EINVAL); address or size unaligned (EINVAL).
//
// Under slots_lock: nothing happens when the range already has these
// attributes; otherwise every memslot overlapping the range is invalidated
// (begin), private huge mappings straddling the range's edges are split
// when it goes shared (a failed split aborts with its errno and the
// attributes stay), its mappings of the old attribute are zapped (pre-set), the
// attributes are stored, huge pages' MIXED flags are recomputed
// (post-set), and the invalidation ends.
func (vm *VM) SetMemoryAttributes(t *sched.Thread, a MemoryAttributes) error {
	const op = "KVM_SET_MEMORY_ATTRIBUTES"
	if err := vm.ioctlGate(op); err != nil {
		return err
	}
	if !vm.sys.cfg.MemoryAttributes {
		return errno.New(op, errno.ENOTTY, "this host has no memory attributes (KVM_CAP_MEMORY_ATTRIBUTES = 0)")
	}
	switch {
	case a.Flags != 0:
		return errno.Newf(op, errno.EINVAL, "flags %#x must be 0", a.Flags)
	case a.Attributes&^vm.supportedAttributes() != 0:
		return errno.Newf(op, errno.EINVAL, "attributes %#x outside the supported %#x", a.Attributes, vm.supportedAttributes())
	case a.Size == 0 || a.Address+a.Size < a.Address:
		return errno.New(op, errno.EINVAL, "size is zero or address+size wraps")
	case a.Address%addr.PageSize != 0 || a.Size%addr.PageSize != 0:
		return errno.New(op, errno.EINVAL, "address and size must be page aligned")
	}
	start, end := addr.GFN(a.Address>>addr.PageShift), addr.GFN((a.Address+a.Size)>>addr.PageShift)
	vm.slotsLock.Lock(t)
	defer vm.slotsLock.Unlock(t)
	if vm.attrs.All(uint64(start), uint64(end), a.Attributes) {
		return nil
	}
	toPrivate := a.Attributes&gmem.AttrPrivate != 0
	slots := vm.slotsIn(start, end)
	// Pre-set: split private huge leaves cut by the range's edges, then
	// zap the mappings of the old attribute.
	if len(slots) > 0 {
		splitting := !toPrivate && vm.typ.hasPrivateMem()
		if splitting {
			// The split cache is filled before mmu_lock (per-VM external
			// cache for splitting, TDX huge-page series patches 19-20).
			if err := vm.mmu.TopUpSplitCache(t); err != nil {
				return err
			}
		}
		vm.mmuLock.Lock(t)
		vm.invalidateBeginLocked()
		if splitting {
			// kvm_split_cross_boundary_leafs() (patch 15): a failure
			// aborts the change before anything is unmapped.
			var rs []gmem.Range
			for _, s := range slots {
				rs = append(rs, gmem.Range{Slot: s, Start: max(start, s.base), End: min(end, s.EndGFN()), Filter: gmem.FilterPrivate})
			}
			if err := vm.SplitLocked(t, rs); err != nil {
				vm.invalidateEndLocked()
				vm.mmuLock.Unlock(t)
				return errno.Wrapf(op, errno.Of(err), err, "splitting private huge mappings")
			}
		}
		flush := false
		for _, s := range slots {
			// The huge pages straddling the edges join the invalidation
			// (no fault may map them huge meanwhile), but only the GFNs
			// whose attribute changes are unmapped: "that will unmap any
			// existing hugepages" (kvm_arch_pre_set_memory_attributes).
			is, ie := vm.preSetRange(s, start, end)
			vm.invalidateRangeAddLocked(is, ie)
			filter := gmem.FilterPrivate
			if toPrivate {
				filter = gmem.FilterShared
			}
			if vm.typ.hasPrivateMem() {
				zs, ze := max(start, s.base), min(end, s.EndGFN())
				flush = vm.mmu.UnmapGFNRange(t, gmem.Range{Slot: s, Start: zs, End: ze, Filter: filter}) || flush
			}
		}
		if flush {
			vm.mmu.FlushRemoteTLBs(t)
		}
		vm.mmuLock.Unlock(t)
	}
	vm.attrsMu.Lock() // writers are serialised by slots_lock; this is for lockless readers
	vm.attrs.Set(uint64(start), uint64(end), a.Attributes)
	vm.attrsMu.Unlock()
	// Post-set: recompute MIXED, then end the invalidation.
	if len(slots) > 0 {
		vm.mmuLock.Lock(t)
		for _, s := range slots {
			vm.postSetMixed(s, start, end)
		}
		vm.invalidateEndLocked()
		vm.mmuLock.Unlock(t)
	}
	name := "convert_shared"
	if toPrivate {
		name = "convert_private"
	}
	vm.event(t, name, a.Address, a.Size, "")
	return nil
}

func (vm *VM) slotsIn(start, end addr.GFN) []*Memslot {
	var out []*Memslot
	for _, s := range vm.slotList() {
		if s.base < end && start < s.EndGFN() {
			out = append(out, s)
		}
	}
	return out
}

// preSetRange is the x86 kvm_arch_pre_set_memory_attributes invalidation
// range: the change clipped to the slot, extended to whole huge pages that
// straddle its head or tail when they lie inside the slot and are not
// already mixed, so no huge mapping can be created over a GFN whose
// attribute is not changing while the change is in flight.
func (vm *VM) preSetRange(s *Memslot, start, end addr.GFN) (addr.GFN, addr.GFN) {
	zs, ze := max(start, s.base), min(end, s.EndGFN())
	for _, level := range []addr.Level{addr.Level2M, addr.Level1G} {
		per := addr.GFN(level.Pages())
		if h := zs &^ (per - 1); h != zs && h >= s.base && h+per <= s.EndGFN() && !s.Mixed(level, h) {
			zs = h
		}
		if te := (ze + per - 1) &^ (per - 1); te != ze && te-per >= s.base && te <= s.EndGFN() && !s.Mixed(level, te-per) {
			ze = te
		}
	}
	return zs, ze
}

// postSetMixed is kvm_arch_post_set_memory_attributes' MIXED update: for 2M
// then 1G, the huge pages at the range's head and tail are recomputed and
// those fully inside it become uniform.
func (vm *VM) postSetMixed(s *Memslot, start, end addr.GFN) {
	for _, level := range []addr.Level{addr.Level2M, addr.Level1G} {
		per := addr.GFN(level.Pages())
		lo := max(start, s.base) &^ (per - 1)
		for g := lo; g < min(end, s.EndGFN()); g += per {
			if g < s.base || g+per > s.EndGFN() {
				continue // a huge page cut by the slot edge is never tracked
			}
			vm.setMixed(s, level, g, !vm.hugePageUniform(s, level, g))
		}
	}
}

// hugePageUniform reports whether the huge page of level at gfn has one
// attribute throughout (for 1G: every 2M page non-mixed and alike). The
// caller holds slots_lock, which excludes every writer of attrs.
func (vm *VM) hugePageUniform(s *Memslot, level addr.Level, gfn addr.GFN) bool {
	if level == addr.Level2M {
		_, ok := vm.attrs.Uniform(uint64(gfn), uint64(gfn)+level.Pages())
		return ok
	}
	first := vm.attrs.Get(uint64(gfn))
	for g := gfn; g < gfn+addr.GFN(level.Pages()); g += 512 {
		if s.Mixed(addr.Level2M, g) || vm.attrs.Get(uint64(g)) != first {
			return false
		}
	}
	return true
}

// Attributes returns the attributes of gfn in KVM's array
// (kvm_get_memory_attributes).
func (vm *VM) Attributes(gfn addr.GFN) uint64 {
	vm.attrsMu.RLock()
	defer vm.attrsMu.RUnlock()
	return vm.attrs.Get(uint64(gfn))
}

// RangeIsPrivate reports whether every GFN in [start, end) has PRIVATE in
// KVM's array (gmem.Owner; kvm_range_has_memory_attributes).
func (vm *VM) RangeIsPrivate(start, end addr.GFN) bool {
	vm.attrsMu.RLock()
	defer vm.attrsMu.RUnlock()
	return vm.attrs.All(uint64(start), uint64(end), gmem.AttrPrivate)
}

// RangeIsShared reports whether no GFN in [start, end) has PRIVATE in
// KVM's array.
func (vm *VM) RangeIsShared(start, end addr.GFN) bool {
	vm.attrsMu.RLock()
	defer vm.attrsMu.RUnlock()
	return vm.attrs.All(uint64(start), uint64(end), 0)
}

// IsPrivate is kvm_mem_is_private(): for a GFN backed by an in-place
// guest_memfd the file's own state decides, otherwise KVM's array.
func (vm *VM) IsPrivate(gfn addr.GFN) bool {
	if !vm.typ.hasPrivateMem() {
		return false
	}
	if s := vm.SlotAt(gfn); s != nil && s.file != nil && s.file.InPlace() {
		return s.file.IsPrivate(gmem.Index(s, gfn))
	}
	return vm.Attributes(gfn)&gmem.AttrPrivate != 0
}
