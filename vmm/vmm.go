// Package vmm is the userspace VMM of a TD, as QEMU drives KVM: it creates
// the VM, its guest_memfd and memslot, initialises the TD and its vCPUs,
// loads and measures the initial image with KVM_TDX_INIT_MEM_REGION,
// finalizes, answers the guest's MapGPA exits by converting memory
// (KVM_SET_MEMORY_ATTRIBUTES, a punch hole in guest_memfd when memory goes
// shared, a discard of the shared backing when it goes private), and tears
// the TD down by closing its files. Every step goes through the ioctl-level
// API of kvm, gmem and kvm/tdx.
package vmm

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/usermem"
)

// Config describes one TD.
type Config struct {
	// MemBytes is the guest's memory: by default one memslot at GPA 0
	// backed by a guest_memfd (private) and by the VMM's anonymous memory
	// (shared). With Slots it must be their total.
	MemBytes uint64
	// Slots is the memslot layout (slot i is memslot i), each a 2 MiB
	// aligned GPA range; all are bound to one guest_memfd, one after the
	// other from GmemOffset, and to one anonymous mapping, as QEMU splits
	// RAM below and above the 32-bit PCI hole. Empty means one slot.
	Slots []Slot
	// VCPUs is the number of vCPUs.
	VCPUs int
	// TD holds KVM-side options.
	TD tdx.Config
	// KeepSharedBacking skips the guest_memfd punch hole when memory goes
	// shared (QEMU punches by default, freeing the private pages).
	KeepSharedBacking bool
	// InPlace makes the guest_memfd convert in place (docs/policies.md's second
	// conversion mode): MapGPA is answered with the file's own
	// KVM_SET_MEMORY_ATTRIBUTES2, which splits private huge mappings and
	// folios itself, and nothing is punched.
	InPlace bool
	// GmemOffset is where in the guest_memfd GPA 0 is bound
	// (guest_memfd_offset, page aligned). A HugeTLB file grows by one huge
	// page to make room; with an offset that is not a whole number of huge
	// pages, guest_memfd refuses the VMM's punches (EINVAL), so use it with
	// InPlace or KeepSharedBacking.
	GmemOffset uint64
	// PopulateInPlace (with InPlace and TD.OptionalSource) loads the image
	// the way the in-place conversion series' RFC v5 describes for a TD
	// ("[PATCH RFC v5 26/53] KVM: x86: Support SNP and TDX applying
	// content modes"): the range goes shared, the VMM writes the image
	// into its mapping of the guest_memfd, converts it to private with
	// KVM_SET_MEMORY_ATTRIBUTES2_PRESERVE (before KVM_TDX_FINALIZE_VM) and
	// calls KVM_TDX_INIT_MEM_REGION with no source. The file is created
	// with GUEST_MEMFD_FLAG_MMAP.
	PopulateInPlace bool
}

// Slot is one memslot: guest physical [GPA, GPA+Size).
type Slot struct{ GPA, Size uint64 }

// End returns the first GPA past s.
func (s Slot) End() uint64 { return s.GPA + s.Size }

// slot is a memslot as the VMM set it up.
type slot struct {
	Slot
	gmemOff uint64 // where GPA lives in the guest_memfd
	hva     uint64 // userspace address of GPA's shared backing
	deleted bool
}

// SlotLayout returns cfg's memslots (one at GPA 0 when none are given).
func (cfg Config) SlotLayout() []Slot {
	if len(cfg.Slots) == 0 {
		return []Slot{{GPA: 0, Size: cfg.MemBytes}}
	}
	return cfg.Slots
}

// checkSlots enforces what Create needs of a layout: 2 MiB aligned,
// non-empty, non-overlapping slots below the shared bit (GPAW 48: bit 47)
// adding up to MemBytes.
func (cfg Config) checkSlots() error {
	var total uint64
	slots := cfg.SlotLayout()
	for i, s := range slots {
		if s.Size == 0 || s.GPA%addr.Size2M != 0 || s.Size%addr.Size2M != 0 {
			return fmt.Errorf("vmm: slot %d [%#x, %#x): GPA and size must be non-zero multiples of 2 MiB", i, s.GPA, s.End())
		}
		if s.End() > 1<<47 || s.End() < s.GPA {
			return fmt.Errorf("vmm: slot %d [%#x, %#x) reaches the shared bit (GPA bit 47)", i, s.GPA, s.End())
		}
		for j := range i {
			if o := slots[j]; s.GPA < o.End() && o.GPA < s.End() {
				return fmt.Errorf("vmm: slot %d [%#x, %#x) overlaps slot %d [%#x, %#x)", i, s.GPA, s.End(), j, o.GPA, o.End())
			}
		}
		total += s.Size
	}
	if total != cfg.MemBytes {
		return fmt.Errorf("vmm: slots add up to %#x bytes, memory is %#x", total, cfg.MemBytes)
	}
	return nil
}

// Region is part of the TD's initial image.
type Region struct {
	GPA     uint64
	Data    []byte // padded with zeros to whole pages
	Measure bool   // KVM_TDX_MEASURE_MEMORY_REGION
}

// Stats counts conversions the VMM made.
type Stats struct {
	ToShared, ToPrivate           int64 // MapGPA exits handled, by direction
	BytesToShared, BytesToPrivate uint64
	PunchedBytes                  uint64
	InPlaceRetries                int64 // in-place conversions retried after EAGAIN
}

// VMM is one TD's userspace.
type VMM struct {
	Host  *tdx.Host
	VM    *kvm.VM
	TD    *tdx.TD
	Gmem  *gmem.File
	User  *usermem.Space
	VCPUs []*tdx.VCPU

	cfg   Config
	slots []slot
	// stats are Stats as atomics: vCPUs exit to the VMM concurrently.
	stats struct {
		toShared, toPrivate           atomic.Int64
		bytesToShared, bytesToPrivate atomic.Uint64
		punchedBytes                  atomic.Uint64
		inPlaceRetries                atomic.Int64
	}
	// contentToShared is the KVM_SET_MEMORY_ATTRIBUTES2 content mode the
	// VMM asks for on in-place private-to-shared conversions
	// (SetContentToShared).
	contentToShared atomic.Uint64
}

// SetContentToShared sets the content mode (gmem.ContentZero, or 0 for the
// default) the VMM passes on in-place private-to-shared conversions from
// now on. Conversions to private always pass 0: ZERO is never supported
// to private, and a TD takes PRESERVE only before KVM_TDX_FINALIZE_VM.
// Series: "[PATCH RFC v5 22/53] KVM: guest_memfd: Apply content modes
// while setting memory attributes"
// (20260428-gmem-inplace-conversion-v5-22-d8608ccfca22@google.com).
func (m *VMM) SetContentToShared(flags uint64) { m.contentToShared.Store(flags) }

// Create builds a TD up to the point where its image can be loaded:
// KVM_CREATE_VM, KVM_TDX_INIT_VM, the guest_memfd and memslot, every GPA
// private, and the vCPUs created and initialised (KVM_TDX_INIT_VCPU).
func Create(t *sched.Thread, host *tdx.Host, cfg Config) (*VMM, error) {
	if cfg.MemBytes == 0 || cfg.MemBytes%addr.Size2M != 0 {
		return nil, fmt.Errorf("vmm: memory %#x: must be a non-zero multiple of 2 MiB", cfg.MemBytes)
	}
	if cfg.VCPUs < 1 {
		return nil, fmt.Errorf("vmm: %d vCPUs: need at least one", cfg.VCPUs)
	}
	if err := cfg.checkSlots(); err != nil {
		return nil, err
	}
	vm, err := host.Sys.CreateVM(t, kvm.TDXVM)
	if err != nil {
		return nil, err
	}
	m := &VMM{Host: host, VM: vm, cfg: cfg}
	if err := m.setUp(t); err != nil {
		// The VMM exits: its fds close and KVM destroys the VM
		// (kvm_destroy_vm), reclaiming what the TD holds.
		return nil, errors.Join(err, m.Teardown(t))
	}
	m.TD.SetVMM(m.mapGPA)
	return m, nil
}

// setUp is Create after KVM_CREATE_VM.
func (m *VMM) setUp(t *sched.Thread) error {
	host, vm, cfg := m.Host, m.VM, m.cfg
	var err error
	if m.TD, err = host.NewTD(vm, cfg.TD); err != nil {
		return err
	}
	if err := m.TD.InitVM(t, tdx.InitVM{GPAW: 48, MaxVCPUs: cfg.VCPUs}); err != nil {
		return err
	}
	if m.User, err = usermem.New(host.Mem, "vmm-"+vm.Name()); err != nil {
		return err
	}
	vm.SetUserMemory(m.User)
	m.User.Register(vm)
	hva, err := m.User.Mmap(cfg.MemBytes)
	if err != nil {
		return err
	}
	if m.Gmem, err = vm.CreateGuestMemfd(t, gmemArgs(cfg)); err != nil {
		return err
	}
	off := uint64(0)
	for i, s := range cfg.SlotLayout() {
		sl := slot{Slot: s, gmemOff: cfg.GmemOffset + off, hva: hva + off}
		if err := vm.SetUserMemoryRegion2(t, kvm.Region{Slot: uint32(i), Flags: kvm.MemGuestMemfd, GuestPhysAddr: s.GPA,
			MemorySize: s.Size, UserspaceAddr: sl.hva, GuestMemfdOffset: sl.gmemOff, GuestMemfd: kvm.FD{File: m.Gmem}}); err != nil {
			return err
		}
		if err := vm.SetMemoryAttributes(t, kvm.MemoryAttributes{Address: s.GPA, Size: s.Size, Attributes: gmem.AttrPrivate}); err != nil {
			return err
		}
		m.slots = append(m.slots, sl)
		off += s.Size
	}
	for i := range cfg.VCPUs {
		v, err := m.TD.CreateVCPU(t, uint32(i))
		if err != nil {
			return err
		}
		if err := v.InitVCPU(t); err != nil {
			return err
		}
		m.VCPUs = append(m.VCPUs, v)
	}
	return nil
}

// gmemArgs is the guest_memfd for the TD's memory: 4 KiB folios with
// huge pages off, else a HugeTLB file of 2 MiB pages (or 1 GiB pages for
// hugepages=1G when the memory is a whole number of them), from which KVM
// may map private memory huge.
func gmemArgs(cfg Config) gmem.CreateArgs {
	a := gmem.CreateArgs{Size: cfg.MemBytes + cfg.GmemOffset, InPlace: cfg.InPlace}
	if cfg.PopulateInPlace {
		a.Flags |= gmem.FlagMMAP
	}
	switch cfg.TD.MMU.HugePages {
	case mmu.HugePages2M:
		a.Flags, a.PageOrder = a.Flags|gmem.FlagHugeTLB, addr.Order2M
	case mmu.HugePages1G:
		a.Flags, a.PageOrder = a.Flags|gmem.FlagHugeTLB, addr.Order2M
		if cfg.MemBytes%addr.Size1G == 0 {
			a.PageOrder = addr.Order1G
		}
	}
	unit := uint64(addr.PageSize) << a.PageOrder
	a.Size = (a.Size + unit - 1) &^ (unit - 1)
	return a
}

// HugePoolPages is how many pages of the host's 2 MiB and 1 GiB hugetlb
// pools a TD with cfg takes.
func HugePoolPages(cfg Config) (huge2M, huge1G int) {
	switch a := gmemArgs(cfg); {
	case a.PageOrder == addr.Order1G:
		return 0, int(a.Size / addr.Size1G)
	case a.PageOrder == addr.Order2M:
		return int(a.Size / addr.Size2M), 0
	}
	return 0, 0
}

// Stats returns the conversion counters.
func (m *VMM) Stats() Stats {
	return Stats{ToShared: m.stats.toShared.Load(), ToPrivate: m.stats.toPrivate.Load(),
		BytesToShared: m.stats.bytesToShared.Load(), BytesToPrivate: m.stats.bytesToPrivate.Load(),
		PunchedBytes: m.stats.punchedBytes.Load(), InPlaceRetries: m.stats.inPlaceRetries.Load()}
}

// SharedHVA returns the userspace address backing gpa when it is shared
// (0 outside every memslot).
func (m *VMM) SharedHVA(gpa uint64) uint64 {
	if s := m.slotOf(gpa, 1); s != nil {
		return s.hva + gpa - s.GPA
	}
	return 0
}

// slotOf returns the live memslot holding all of [gpa, gpa+size), or nil.
func (m *VMM) slotOf(gpa, size uint64) *slot {
	for i := range m.slots {
		s := &m.slots[i]
		if !s.deleted && gpa >= s.GPA && gpa+size <= s.End() && gpa+size > gpa {
			return s
		}
	}
	return nil
}

// pieces calls fn for each part of [gpa, gpa+size) in one live memslot,
// in order; a part in no memslot is EINVAL (QEMU's kvm_convert_memory:
// "Cannot find memory region").
func (m *VMM) pieces(op string, gpa, size uint64, fn func(s *slot, gpa, size uint64) error) error {
	for next, end := gpa, gpa+size; next < end; {
		var s *slot
		for i := range m.slots {
			if c := &m.slots[i]; !c.deleted && next >= c.GPA && next < c.End() {
				s = c
			}
		}
		if s == nil {
			return errno.Newf(op, errno.EINVAL, "%#x is in no memslot", next)
		}
		n := min(end, s.End()) - next
		if err := fn(s, next, n); err != nil {
			return err
		}
		next += n
	}
	return nil
}

// LoadImage copies each region into a staging buffer in the VMM's memory
// and adds it with KVM_TDX_INIT_MEM_REGION on vCPU 0, measured when asked.
func (m *VMM) LoadImage(t *sched.Thread, regions []Region) error {
	if m.cfg.PopulateInPlace {
		return m.loadInPlace(t, regions)
	}
	for _, r := range regions {
		n := (uint64(len(r.Data)) + addr.PageSize - 1) / addr.PageSize
		if n == 0 {
			continue
		}
		buf, err := m.User.Mmap(n * addr.PageSize)
		if err != nil {
			return err
		}
		if err := m.User.Write(t, buf, r.Data); err != nil {
			return err
		}
		mr := tdx.MemRegion{SourceAddr: buf, GPA: r.GPA, NPages: n, Measure: r.Measure}
		err = m.TD.InitMemRegion(t, m.VCPUs[0], &mr)
		if uerr := m.User.Munmap(t, buf, n*addr.PageSize); err == nil {
			err = uerr
		}
		if err != nil {
			return fmt.Errorf("KVM_TDX_INIT_MEM_REGION at %#x (%d pages left): %w", mr.GPA, mr.NPages, err)
		}
	}
	return nil
}

// Finalize is KVM_TDX_FINALIZE_VM; it returns the MRTD.
func (m *VMM) Finalize(t *sched.Thread) ([]byte, error) { return m.TD.Finalize(t) }

// mapGPA answers a MapGPA exit the way QEMU does (kvm_convert_memory): set
// the attributes; when the range goes shared, punch it out of guest_memfd
// (the private pages are freed); when it goes private, discard the shared
// backing.
func (m *VMM) mapGPA(t *sched.Thread, v *tdx.VCPU, x tdx.MapGPAExit) error {
	size := x.NPages << addr.PageShift
	if err := m.pieces("kvm_convert_memory", x.GPA, size, func(*slot, uint64, uint64) error { return nil }); err != nil {
		return err
	}
	attrs := uint64(0)
	if x.Private {
		attrs = gmem.AttrPrivate
	}
	if !m.cfg.InPlace {
		if err := m.VM.SetMemoryAttributes(t, kvm.MemoryAttributes{Address: x.GPA, Size: size, Attributes: attrs}); err != nil {
			return err
		}
	}
	return m.pieces("kvm_convert_memory", x.GPA, size, func(s *slot, gpa, size uint64) error {
		if m.cfg.InPlace {
			if err := m.convertInPlace(t, s.gmemOff+gpa-s.GPA, size, attrs); err != nil {
				return err
			}
		}
		if x.Private {
			m.stats.toPrivate.Add(1)
			m.stats.bytesToPrivate.Add(size)
			return m.User.Discard(t, s.hva+gpa-s.GPA, size)
		}
		m.stats.toShared.Add(1)
		m.stats.bytesToShared.Add(size)
		if m.cfg.InPlace || m.cfg.KeepSharedBacking {
			return nil // in place: the pages stay in the file, now shared
		}
		return m.punchShared(t, s, gpa, size)
	})
}

// convertInPlace is KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd, retried
// while it answers EAGAIN: an unexpected folio reference is usually a
// transient one (a vCPU's fault in flight, a GUP), gone in a moment, so
// the VMM pauses and tries again, at most inPlaceRetries times, before the
// guest is told TDVMCALL_RETRY. A reference that never goes (the
// pin_private_pages design) exhausts the retries, and then the guest's.
func (m *VMM) convertInPlace(t *sched.Thread, offset, size, attrs uint64) error {
	flags := uint64(0)
	if attrs == 0 {
		flags = m.contentToShared.Load()
	}
	for tries := 0; ; tries++ {
		_, err := m.Gmem.SetAttributes(t, offset, size, attrs, flags)
		if err == nil || !errors.Is(err, errno.EAGAIN) || tries == inPlaceRetries {
			return err
		}
		m.stats.inPlaceRetries.Add(1)
		t.Relax()
	}
}

// inPlaceRetries bounds convertInPlace's retries of one conversion.
const inPlaceRetries = 64

// punchShared frees the private pages behind [gpa, gpa+size), now shared,
// as QEMU's ram_block_discard_range() on the guest_memfd does. A HugeTLB
// file is punched in whole huge pages only: those of the range that are
// now shared throughout (QEMU discards at the backend's page size). The
// private pages of a partly shared huge page stay.
func (m *VMM) punchShared(t *sched.Thread, s *slot, gpa, size uint64) error {
	unit := uint64(addr.PageSize) << m.Gmem.PageOrder()
	if unit == addr.PageSize {
		m.stats.punchedBytes.Add(size)
		return m.Gmem.Fallocate(t, gmem.FallocPunchHole|gmem.FallocKeepSize, int64(s.gmemOff+gpa-s.GPA), int64(size))
	}
	for lo := gpa &^ (unit - 1); lo < gpa+size; lo += unit {
		if lo < s.GPA || lo+unit > s.End() || !m.VM.RangeIsShared(addr.GPA(lo).GFN(), addr.GPA(lo+unit).GFN()) {
			continue
		}
		m.stats.punchedBytes.Add(unit)
		if err := m.Gmem.Fallocate(t, gmem.FallocPunchHole|gmem.FallocKeepSize, int64(s.gmemOff+lo-s.GPA), int64(unit)); err != nil {
			return err
		}
	}
	return nil
}

// PunchHole punches [gpa, gpa+size) out of guest_memfd, as a VMM
// releasing memory does (the private pages are zapped and freed).
func (m *VMM) PunchHole(t *sched.Thread, gpa, size uint64) error {
	return m.pieces("fallocate", gpa, size, func(s *slot, gpa, size uint64) error {
		m.stats.punchedBytes.Add(size)
		return m.Gmem.Fallocate(t, gmem.FallocPunchHole|gmem.FallocKeepSize, int64(s.gmemOff+gpa-s.GPA), int64(size))
	})
}

// DiscardShared drops the shared backing of [gpa, gpa+size)
// (madvise(MADV_DONTNEED) on the VMM's memory), as a balloon device does
// with pages the guest gave back; in-place conversion punches the
// now-shared pages out of the guest_memfd as well.
func (m *VMM) DiscardShared(t *sched.Thread, gpa, size uint64) error {
	return m.pieces("madvise", gpa, size, func(s *slot, gpa, size uint64) error {
		if m.cfg.InPlace {
			if err := m.Gmem.Fallocate(t, gmem.FallocPunchHole|gmem.FallocKeepSize, int64(s.gmemOff+gpa-s.GPA), int64(size)); err != nil {
				return err
			}
			m.stats.punchedBytes.Add(size)
		}
		return m.User.Discard(t, s.hva+gpa-s.GPA, size)
	})
}

// DeleteSlot deletes memslot id (KVM_SET_USER_MEMORY_REGION2 with size 0).
// For a TD, KVM zaps every private page of the slot: the guest loses
// that memory (kvm_arch_flush_shadow_memslot).
func (m *VMM) DeleteSlot(t *sched.Thread, id int) error {
	if id < 0 || id >= len(m.slots) || m.slots[id].deleted {
		return errno.Newf("KVM_SET_USER_MEMORY_REGION2", errno.EINVAL, "no memslot %d", id)
	}
	s := &m.slots[id]
	if err := m.VM.SetUserMemoryRegion2(t, kvm.Region{Slot: uint32(id), Flags: kvm.MemGuestMemfd, GuestPhysAddr: s.GPA,
		GuestMemfd: kvm.FD{File: m.Gmem}, GuestMemfdOffset: s.gmemOff}); err != nil {
		return err
	}
	s.deleted = true
	return nil
}

// MMUNotifier invalidates the VMM's mapping of [gpa, gpa+size) as an
// MMU-notifier event would (munmap, migration, KSM of the shared backing).
func (m *VMM) MMUNotifier(t *sched.Thread, gpa, size uint64) error {
	return m.pieces("mmu_notifier", gpa, size, func(s *slot, gpa, size uint64) error {
		m.VM.MMUNotifierInvalidate(t, s.hva+gpa-s.GPA, size)
		return nil
	})
}

// MemtypeChange zaps [gpa, gpa+size) as a guest memory-type change does
// (kvm_zap_gfn_range() on an MTRR or noncoherent-DMA event).
func (m *VMM) MemtypeChange(t *sched.Thread, gpa, size uint64) error {
	return m.pieces("kvm_zap_gfn_range", gpa, size, func(_ *slot, gpa, size uint64) error {
		m.VM.ZapGFNRangeMemtype(t, addr.GPA(gpa).GFN(), addr.GPA(gpa+size).GFN())
		return nil
	})
}

// MemoryFailure reports a hardware memory error on the private page at
// gpa (memory_failure() -> guest_memfd's error_remove_folio).
func (m *VMM) MemoryFailure(t *sched.Thread, gpa uint64) error {
	return m.pieces("memory_failure", gpa, addr.PageSize, func(s *slot, gpa, _ uint64) error {
		return m.Gmem.MemoryFailure(t, (s.gmemOff+gpa-s.GPA)>>addr.PageShift)
	})
}

// Teardown closes the guest_memfd (which zaps every private page while
// the HKID is still assigned), then the VM fd (kvm_destroy_vm: HKID
// release, S-EPT and control pages reclaimed), then exits the process.
// Every vCPU must be out of the guest. Under teardown=terminate_vm
// (Config.TD.TerminateVM) it first calls KVM_TDX_TERMINATE_VM, so the
// HKID goes first and the guest_memfd's zap reclaims each private page
// with TDH.PHYMEM.PAGE.RECLAIM (tdx.TD.TerminateVM).
func (m *VMM) Teardown(t *sched.Thread) error {
	for _, v := range m.VCPUs {
		v.Halt()
	}
	if m.cfg.TD.TerminateVM && m.TD != nil {
		// Optional (Documentation/virt/kvm/x86/intel-tdx.rst as
		// posted): on EIO from a VM already dead the VMM goes on to
		// close its fds, which is the per-page teardown.
		_ = m.TD.TerminateVM(t)
	}
	if m.Gmem != nil {
		if err := m.Gmem.Close(t); err != nil {
			return err
		}
	}
	if err := m.VM.Close(t); err != nil {
		return err
	}
	if m.User == nil {
		return nil
	}
	return m.User.Release(t)
}
