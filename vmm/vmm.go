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
	"fmt"

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
	// MemBytes is the guest's memory: one memslot at GPA 0 backed by a
	// guest_memfd (private) and by the VMM's anonymous memory (shared).
	MemBytes uint64
	// VCPUs is the number of vCPUs.
	VCPUs int
	// TD holds KVM-side options.
	TD tdx.Config
	// KeepSharedBacking skips the guest_memfd punch hole when memory goes
	// shared (QEMU punches by default, freeing the private pages).
	KeepSharedBacking bool
	// InPlace makes the guest_memfd convert in place (DESIGN.md's second
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
	hva   uint64 // userspace address of GPA 0's shared backing
	stats Stats
}

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
	vm, err := host.Sys.CreateVM(t, kvm.TDXVM)
	if err != nil {
		return nil, err
	}
	m := &VMM{Host: host, VM: vm, cfg: cfg}
	if m.TD, err = host.NewTD(vm, cfg.TD); err != nil {
		return nil, err
	}
	if err := m.TD.InitVM(t, tdx.InitVM{GPAW: 48, MaxVCPUs: cfg.VCPUs}); err != nil {
		return nil, err
	}
	if m.User, err = usermem.New(host.Mem, "vmm-"+vm.Name()); err != nil {
		return nil, err
	}
	vm.SetUserMemory(m.User)
	m.User.Register(vm)
	if m.hva, err = m.User.Mmap(cfg.MemBytes); err != nil {
		return nil, err
	}
	if m.Gmem, err = vm.CreateGuestMemfd(t, gmemArgs(cfg)); err != nil {
		return nil, err
	}
	if err := vm.SetUserMemoryRegion2(t, kvm.Region{Slot: 0, Flags: kvm.MemGuestMemfd, MemorySize: cfg.MemBytes,
		UserspaceAddr: m.hva, GuestMemfdOffset: cfg.GmemOffset, GuestMemfd: kvm.FD{File: m.Gmem}}); err != nil {
		return nil, err
	}
	if err := vm.SetMemoryAttributes(t, kvm.MemoryAttributes{Size: cfg.MemBytes, Attributes: gmem.AttrPrivate}); err != nil {
		return nil, err
	}
	for i := range cfg.VCPUs {
		v, err := m.TD.CreateVCPU(t, uint32(i))
		if err != nil {
			return nil, err
		}
		if err := v.InitVCPU(t); err != nil {
			return nil, err
		}
		m.VCPUs = append(m.VCPUs, v)
	}
	m.TD.SetVMM(m.mapGPA)
	return m, nil
}

// gmemArgs is the guest_memfd for the TD's memory: 4 KiB folios with
// huge pages off, else a HugeTLB file of 2 MiB pages (or 1 GiB pages for
// hugepages=1G when the memory is a whole number of them), from which KVM
// may map private memory huge.
func gmemArgs(cfg Config) gmem.CreateArgs {
	a := gmem.CreateArgs{Size: cfg.MemBytes + cfg.GmemOffset, InPlace: cfg.InPlace}
	switch cfg.TD.MMU.HugePages {
	case mmu.HugePages2M:
		a.Flags, a.PageOrder = gmem.FlagHugeTLB, addr.Order2M
	case mmu.HugePages1G:
		a.Flags, a.PageOrder = gmem.FlagHugeTLB, addr.Order2M
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
func (m *VMM) Stats() Stats { return m.stats }

// SharedHVA returns the userspace address backing gpa when it is shared.
func (m *VMM) SharedHVA(gpa uint64) uint64 { return m.hva + gpa }

// LoadImage copies each region into a staging buffer in the VMM's memory
// and adds it with KVM_TDX_INIT_MEM_REGION on vCPU 0, measured when asked.
func (m *VMM) LoadImage(t *sched.Thread, regions []Region) error {
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
	if x.GPA+size > m.cfg.MemBytes {
		return errno.Newf("kvm_convert_memory", errno.EINVAL, "[%#x, %#x) is outside guest memory", x.GPA, x.GPA+size)
	}
	attrs := uint64(0)
	if x.Private {
		attrs = gmem.AttrPrivate
	}
	var err error
	if m.cfg.InPlace {
		_, err = m.Gmem.SetAttributes(t, x.GPA+m.cfg.GmemOffset, size, attrs, 0)
	} else {
		err = m.VM.SetMemoryAttributes(t, kvm.MemoryAttributes{Address: x.GPA, Size: size, Attributes: attrs})
	}
	if err != nil {
		return err
	}
	if x.Private {
		m.stats.ToPrivate++
		m.stats.BytesToPrivate += size
		return m.User.Discard(t, m.hva+x.GPA, size)
	}
	m.stats.ToShared++
	m.stats.BytesToShared += size
	if m.cfg.InPlace {
		return nil // the pages stay in the file, now shared
	}
	if m.cfg.KeepSharedBacking {
		return nil
	}
	unit := uint64(addr.PageSize) << m.Gmem.PageOrder()
	if unit == addr.PageSize {
		m.stats.PunchedBytes += size
		return m.Gmem.Fallocate(t, gmem.FallocPunchHole|gmem.FallocKeepSize, int64(x.GPA), int64(size))
	}
	// A HugeTLB file is punched in whole huge pages only: those of the
	// range that are now shared throughout (QEMU discards at the backend's
	// page size). The private pages of a partly shared huge page stay.
	for lo := x.GPA &^ (unit - 1); lo < x.GPA+size; lo += unit {
		if !m.VM.RangeIsShared(addr.GPA(lo).GFN(), addr.GPA(lo+unit).GFN()) {
			continue
		}
		m.stats.PunchedBytes += unit
		if err := m.Gmem.Fallocate(t, gmem.FallocPunchHole|gmem.FallocKeepSize, int64(lo+m.cfg.GmemOffset), int64(unit)); err != nil {
			return err
		}
	}
	return nil
}

// PunchHole punches [gpa, gpa+size) out of guest_memfd, as a VMM
// releasing memory does (the private pages are zapped and freed).
func (m *VMM) PunchHole(t *sched.Thread, gpa, size uint64) error {
	return m.Gmem.Fallocate(t, gmem.FallocPunchHole|gmem.FallocKeepSize, int64(gpa+m.cfg.GmemOffset), int64(size))
}

// Teardown closes the guest_memfd (which zaps every private page while
// the HKID is still assigned), then the VM fd (kvm_destroy_vm: HKID
// release, S-EPT and control pages reclaimed), then exits the process.
// Every vCPU must be out of the guest.
func (m *VMM) Teardown(t *sched.Thread) error {
	for _, v := range m.VCPUs {
		v.Halt()
	}
	if err := m.Gmem.Close(t); err != nil {
		return err
	}
	if err := m.VM.Close(t); err != nil {
		return err
	}
	return m.User.Release(t)
}
