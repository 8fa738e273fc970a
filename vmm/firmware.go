package vmm

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdvf"
)

// QEMURAM returns where QEMU's q35 machine puts memBytes of RAM (its e820
// RAM entries): below 4 GiB from GPA 0 up to 2 GiB when the memory is
// 0xb0000000 or more, else up to 0xb0000000 (QEMU: pc_q35_init()'s
// lowmem), and the rest from 4 GiB.
func QEMURAM(memBytes uint64) []Slot {
	lowmem := uint64(0xb0000000)
	if memBytes >= 0xb0000000 {
		lowmem = 0x80000000
	}
	low := min(memBytes, lowmem)
	slots := []Slot{{GPA: 0, Size: low}}
	if memBytes > low {
		slots = append(slots, Slot{GPA: 4 << 30, Size: memBytes - low})
	}
	return slots
}

// FirmwareSlots returns the memslots of a TD booted from fw with RAM ram:
// the RAM slots, then one per 2 MiB-aligned span holding image sections
// (BFV, CFV) outside RAM — QEMU's pc.bios, the image mapped below 4 GiB
// and backed by guest_memfd (QEMU: x86_bios_rom_init()). The spans are 2
// MiB aligned because the model's memslots are. TD_HOB and TempMem
// sections must lie in one RAM entry (QEMU: tdx_accept_ram_range(),
// "Failed to accept memory for TDVF section").
func FirmwareSlots(fw *tdvf.Firmware, ram []Slot) ([]Slot, error) {
	inRAM := func(lo, hi uint64) bool {
		for _, r := range ram {
			if lo >= r.GPA && hi <= r.End() {
				return true
			}
		}
		return false
	}
	var spans []Slot
	for _, s := range fw.Sections {
		if !s.FromImage() {
			if !inRAM(s.GPA, s.End()) {
				return nil, fmt.Errorf("vmm: firmware section %d (%s) [%#x, %#x) is not inside the TD's RAM (QEMU: failed to accept memory for TDVF section)",
					s.Index, s.Type, s.GPA, s.End())
			}
			continue
		}
		if inRAM(s.GPA, s.End()) {
			continue
		}
		lo, hi := s.GPA&^(addr.Size2M-1), (s.End()+addr.Size2M-1)&^(addr.Size2M-1)
		for _, r := range ram {
			if lo < r.End() && r.GPA < hi {
				return nil, fmt.Errorf("vmm: firmware section %d (%s) [%#x, %#x) shares a 2 MiB span with RAM [%#x, %#x)",
					s.Index, s.Type, s.GPA, s.End(), r.GPA, r.End())
			}
		}
		spans = append(spans, Slot{GPA: lo, Size: hi - lo})
	}
	slices.SortFunc(spans, func(a, b Slot) int { return cmp.Compare(a.GPA, b.GPA) })
	var merged []Slot
	for _, s := range spans {
		if n := len(merged); n > 0 && s.GPA <= merged[n-1].End() {
			merged[n-1].Size = max(merged[n-1].End(), s.End()) - merged[n-1].GPA
			continue
		}
		merged = append(merged, s)
	}
	return append(slices.Clone(ram), merged...), nil
}

// FirmwareVMM is whose build of a TD from TDVF firmware to follow. They
// differ in what they copy, measure and leave out, so in the MRTD of some
// images (not of Debian's OVMF, whose sections have RawDataSize equal to
// MemoryDataSize and no PAGE.AUG).
type FirmwareVMM int

const (
	// QEMU adds every section, measures those with MR.EXTEND, and copies
	// BFV and CFV from the image for their whole MemoryDataSize (QEMU:
	// tdx_finalize_vm(), tdx_init_fw_mem_region(); PAGE.AUG is not looked at).
	QEMU FirmwareVMM = iota
	// CloudHypervisor adds every section, measures only those whose
	// attributes are exactly MR.EXTEND, and copies RawDataSize bytes of
	// BFV and CFV into fresh (zero) memory (cloud-hypervisor:
	// Vm::populate_tdx_sections(), Vm::init_tdx_memory() in vmm/src/vm.rs).
	CloudHypervisor
	// TDVFSpec is QEMU with PAGE.AUG sections left out, as the TDVF design
	// guide reads: the VMM adds them after the build with
	// TDH.MEM.PAGE.AUG and their RAM stays unaccepted in the HOB.
	TDVFSpec
)

// FirmwareVMMs names the FirmwareVMM values (`mrtd --vmm`).
var FirmwareVMMs = map[string]FirmwareVMM{"qemu": QEMU, "cloud-hypervisor": CloudHypervisor, "tdvf-spec": TDVFSpec}

func (v FirmwareVMM) String() string {
	for n, f := range FirmwareVMMs {
		if f == v {
			return n
		}
	}
	return fmt.Sprintf("FirmwareVMM(%d)", int(v))
}

// Adds reports whether the VMM adds s during the build.
func (v FirmwareVMM) Adds(s tdvf.Section) bool {
	return v != TDVFSpec || s.Attributes&tdvf.PageAug == 0
}

// Measures reports whether the VMM asks KVM to measure s.
func (v FirmwareVMM) Measures(s tdvf.Section) bool {
	switch v {
	case CloudHypervisor:
		return s.Attributes == tdvf.MRExtend
	case TDVFSpec:
		return v.Adds(s) && s.Attributes&tdvf.MRExtend != 0
	}
	return s.Attributes&tdvf.MRExtend != 0
}

// source is what the VMM copies into s for KVM_TDX_INIT_MEM_REGION: the
// image for BFV and CFV, zeros (QEMU: qemu_ram_mmap()) with the HOB list
// at the start of TD_HOB, zeros for TempMem.
func (v FirmwareVMM) source(fw *tdvf.Firmware, s tdvf.Section, hob []byte) []byte {
	if s.FromImage() && v != CloudHypervisor {
		return fw.Data(s)
	}
	data := make([]byte, s.Size)
	if s.FromImage() {
		copy(data, fw.RawData(s))
	} else if s.Type == tdvf.TDHOB {
		copy(data, hob)
	}
	return data
}

// SectionLoad is what the build did with one firmware section.
type SectionLoad struct {
	tdvf.Section
	PagesAdded    uint64 // TDH.MEM.PAGE.ADD
	PagesMeasured uint64 // pages extended with TDH.MR.EXTEND (16 chunks each)
}

// LoadFirmware is LoadFirmwareAs with QEMU.
func (m *VMM) LoadFirmware(t *sched.Thread, fw *tdvf.Firmware, ram []Slot) ([]SectionLoad, error) {
	return m.LoadFirmwareAs(t, QEMU, fw, ram)
}

// LoadFirmwareAs puts fw's sections into the TD as QEMU's tdx_finalize_vm()
// does (with the differences of vmmKind), for a TD whose RAM (QEMU's e820
// RAM entries) is ram: the RAM entries start unaccepted; each TD_HOB and
// TempMem section the VMM adds is cut out of its entry as added memory
// (QEMU: tdx_accept_ram_range()); the entries are sorted by address and
// the HOB list is written into the TD_HOB section's buffer (QEMU:
// tdvf_hob_create()); then, in metadata order, each section is added with
// one KVM_TDX_INIT_MEM_REGION on vCPU 0, with KVM_TDX_MEASURE_MEMORY_REGION
// when measured (QEMU: tdx_init_fw_mem_region()). In the kernel each page
// is one TDH.MEM.PAGE.ADD and, when measured, 16 TDH.MR.EXTENDs of its
// 256-byte chunks right after (Kernel: tdx_gmem_post_populate(); Module:
// tdh_mem_page_add(), tdh_mr_extend()); the MRTD is KVM_TDX_FINALIZE_VM's
// (Module: tdh_mr_finalize()).
//
// QEMU issues KVM_TDX_INIT_VCPU after writing the HOB, passing its GPA;
// Create has already initialised the vCPUs, which changes no measurement
// (TDH.VP.INIT does not extend MRTD). The HOB list is QEMU's whatever
// vmmKind (cloud-hypervisor adds MMIO resources; the HOB is not measured).
func (m *VMM) LoadFirmwareAs(t *sched.Thread, vmmKind FirmwareVMM, fw *tdvf.Firmware, ram []Slot) ([]SectionLoad, error) {
	entries := make([]tdvf.RAMEntry, 0, len(ram)+2*len(fw.Sections))
	for _, r := range ram {
		entries = append(entries, tdvf.RAMEntry{GPA: r.GPA, Length: r.Size})
	}
	for _, s := range fw.Sections {
		if s.FromImage() || !vmmKind.Adds(s) {
			continue
		}
		var err error
		if entries, err = acceptRAMRange(entries, s.GPA, s.Size); err != nil {
			return nil, fmt.Errorf("vmm: firmware section %d (%s): %w", s.Index, s.Type, err)
		}
	}
	slices.SortStableFunc(entries, func(a, b tdvf.RAMEntry) int { return cmp.Compare(a.GPA, b.GPA) })
	hobSec := fw.HOB()
	hob, err := tdvf.BuildHOB(hobSec.GPA, hobSec.Size, entries)
	if err != nil {
		return nil, err
	}
	var loads []SectionLoad
	for _, s := range fw.Sections {
		l := SectionLoad{Section: s}
		if !vmmKind.Adds(s) {
			loads = append(loads, l)
			continue
		}
		var h []byte
		if s.Index == hobSec.Index {
			h = hob
		}
		measure := vmmKind.Measures(s)
		if err := m.LoadImage(t, []Region{{GPA: s.GPA, Data: vmmKind.source(fw, s, h), Measure: measure}}); err != nil {
			return loads, fmt.Errorf("vmm: firmware section %d (%s) at %#x: %w", s.Index, s.Type, s.GPA, err)
		}
		l.PagesAdded = s.Pages()
		if measure {
			l.PagesMeasured = s.Pages()
		}
		loads = append(loads, l)
	}
	return loads, nil
}

// acceptRAMRange marks [gpa, gpa+size) added, splitting the one entry that
// holds it into an added middle and unaccepted head and tail (QEMU:
// tdx_accept_ram_range(); it appends the pieces, and the caller sorts).
func acceptRAMRange(entries []tdvf.RAMEntry, gpa, size uint64) ([]tdvf.RAMEntry, error) {
	end := gpa + size
	for i, e := range entries {
		if end <= e.GPA || gpa >= e.GPA+e.Length {
			continue
		}
		if e.GPA > gpa || e.GPA+e.Length < end {
			break
		}
		if e.Added {
			return entries, nil
		}
		entries[i] = tdvf.RAMEntry{GPA: gpa, Length: size, Added: true}
		if gpa > e.GPA {
			entries = append(entries, tdvf.RAMEntry{GPA: e.GPA, Length: gpa - e.GPA})
		}
		if end < e.GPA+e.Length {
			entries = append(entries, tdvf.RAMEntry{GPA: end, Length: e.GPA + e.Length - end})
		}
		return entries, nil
	}
	return entries, fmt.Errorf("[%#x, %#x) is not inside one RAM entry (QEMU: failed to accept memory for TDVF section)", gpa, end)
}

// FirmwareOptions describes a TD booted from a TDVF image.
type FirmwareOptions struct {
	// MemBytes is the TD's RAM, laid out as QEMU's q35 does (QEMURAM); a
	// multiple of 2 MiB. The MRTD does not depend on it (the HOB is not
	// measured) as long as the TD_HOB and TempMem sections fit in it.
	MemBytes uint64
	// VMM is whose build to follow (QEMU by default).
	VMM FirmwareVMM
}

// FirmwareResult is a TD built from firmware.
type FirmwareResult struct {
	MRTD     []byte
	Sections []SectionLoad
	Slots    []Slot
}

// ErrFirmwareLayout wraps what makes firmware unusable with the options
// (bad input, not a failed build).
var ErrFirmwareLayout = errors.New("firmware does not fit the TD")

// FirmwareMRTD builds a one-vCPU TD from fw on a fresh host through the
// whole stack (Create, LoadFirmware, KVM_TDX_FINALIZE_VM), tears it down,
// and returns the MRTD and what was loaded.
func FirmwareMRTD(fw *tdvf.Firmware, o FirmwareOptions) (FirmwareResult, error) {
	var res FirmwareResult
	if o.MemBytes == 0 || o.MemBytes%addr.Size2M != 0 {
		return res, fmt.Errorf("%w: memory %#x: want a non-zero multiple of 2 MiB", ErrFirmwareLayout, o.MemBytes)
	}
	ram := QEMURAM(o.MemBytes)
	slots, err := FirmwareSlots(fw, ram)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrFirmwareLayout, err)
	}
	res.Slots = slots
	var total uint64
	for _, s := range slots {
		total += s.Size
	}
	cfg := Config{MemBytes: total, Slots: slots, VCPUs: 1}
	hostBytes := (total + 1<<30 + addr.Size1G - 1) &^ (addr.Size1G - 1)
	host, err := NewHost(HostConfig{Bytes: hostBytes, TDs: []Config{cfg}}, nil)
	if err != nil {
		return res, err
	}
	s := sched.New(sched.Deterministic, 0, nil)
	var first firstError
	s.Go("vmm", func(t *sched.Thread) {
		m, err := Create(t, host, cfg)
		if err != nil {
			first.set(err)
			return
		}
		defer func() { first.set(m.Teardown(t)) }()
		if res.Sections, err = m.LoadFirmwareAs(t, o.VMM, fw, ram); err != nil {
			first.set(err)
			return
		}
		res.MRTD, err = m.Finalize(t)
		first.set(err)
	})
	if err := s.Run(); err != nil {
		return res, err
	}
	return res, first.err
}
