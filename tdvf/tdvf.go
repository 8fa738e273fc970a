// Package tdvf reads the TDX metadata of a TD Virtual Firmware image
// (OVMF built with TDX support): the OVMF GUIDed table at the end of the
// image, the TDX metadata offset entry in it, the "TDVF" descriptor and its
// section entries. It makes every check QEMU makes before it builds a TD
// from the image (QEMU: tdvf_parse_metadata(), pc_system_parse_ovmf_flash(),
// x86_bios_rom_init()), and a few QEMU leaves to the kernel or does not
// make, so that a damaged image is refused with the file offset of what is
// wrong instead of measured.
//
// Layouts are edk2's: OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm (the
// GUIDed table) and OvmfPkg/ResetVector/X64/IntelTdxMetadata.asm (the
// descriptor and sections). Every integer is little-endian.
package tdvf

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// GUIDs as they are stored (EFI_GUID: the first three fields little-endian).
var (
	// TableFooterGUID is 96b582de-1fb2-45f7-baea-a366c55a082d, 48 bytes
	// before the end of the image (QEMU: OVMF_TABLE_FOOTER_GUID).
	TableFooterGUID = guid(0x96b582de, 0x1fb2, 0x45f7, [8]byte{0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d})
	// MetadataOffsetGUID is e47a6535-984a-4798-865e-4685a7bf8ec2, the table
	// entry holding the metadata's distance from the end of the image
	// (QEMU: TDX_METADATA_OFFSET_GUID).
	MetadataOffsetGUID = guid(0xe47a6535, 0x984a, 0x4798, [8]byte{0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2})
)

func guid(a uint32, b, c uint16, d [8]byte) [16]byte {
	var g [16]byte
	binary.LittleEndian.PutUint32(g[0:], a)
	binary.LittleEndian.PutUint16(g[4:], b)
	binary.LittleEndian.PutUint16(g[6:], c)
	copy(g[8:], d[:])
	return g
}

const (
	// Signature is "TDVF" read as a little-endian uint32 (QEMU: TDVF_SIGNATURE).
	Signature = 0x46564454
	// Version is the only metadata version defined (QEMU: TDX_METADATA_VERSION).
	Version = 1
	// Alignment is what section GPAs and sizes must be multiples of (QEMU: TDVF_ALIGNMENT).
	Alignment = 4096
	// footerFromEnd is where the footer GUID sits: 32 bytes after the
	// table plus the GUID (QEMU: pc_system_parse_ovmf_flash()).
	footerFromEnd = 48
	descriptorLen = 16 // Signature, Length, Version, NumberOfSectionEntries
	entryLen      = 32 // TdvfSectionEntry
	// MaxImageBytes bounds an image: QEMU maps it below 4 GiB (at
	// 4 GiB - size) and passes its size as an int; real TDVF images are a
	// few MiB.
	MaxImageBytes = 64 << 20
	// maxGPA is the private GPA space of a TD with GPAW 48: bit 47 is the
	// shared bit.
	maxGPA = 1 << 47
)

// SectionType is TDVF_SECTION.Type.
type SectionType uint32

// Section types (edk2: IntelTdxMetadata.asm; TDVF design guide). QEMU
// builds a TD from the first four only.
const (
	BFV          SectionType = 0 // boot firmware volume: code, copied from the image
	CFV          SectionType = 1 // configuration firmware volume: variables, copied
	TDHOB        SectionType = 2 // the HOB list the VMM writes
	TempMem      SectionType = 3 // stacks, heap, mailbox, page tables: zeroed
	PermMem      SectionType = 4
	Payload      SectionType = 5
	PayloadParam SectionType = 6
)

var typeNames = [...]string{"BFV", "CFV", "TD_HOB", "TempMem", "PermMem", "Payload", "PayloadParam"}

func (t SectionType) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type %d", uint32(t))
}

// Attributes is TDVF_SECTION.Attributes.
type Attributes uint32

const (
	// MRExtend: measure the section with TDH.MR.EXTEND (QEMU passes
	// KVM_TDX_MEASURE_MEMORY_REGION; QEMU: TDVF_SECTION_ATTRIBUTES_MR_EXTEND).
	MRExtend Attributes = 1 << 0
	// PageAug: the TDVF design guide lets the VMM add the pages after the
	// build with TDH.MEM.PAGE.AUG (the guest accepts them) instead of
	// TDH.MEM.PAGE.ADD (QEMU: TDVF_SECTION_ATTRIBUTES_PAGE_AUG, defined
	// and not used).
	PageAug Attributes = 1 << 1
)

func (a Attributes) String() string {
	s := ""
	add := func(n string) {
		if s != "" {
			s += "|"
		}
		s += n
	}
	if a&MRExtend != 0 {
		add("MR.EXTEND")
	}
	if a&PageAug != 0 {
		add("PAGE.AUG")
	}
	if rest := a &^ (MRExtend | PageAug); rest != 0 {
		add(fmt.Sprintf("%#x", uint32(rest)))
	}
	if s == "" {
		return "-"
	}
	return s
}

// Section is one TDVF_SECTION entry.
type Section struct {
	Index       int   // position in the metadata
	EntryOffset int64 // file offset of the entry
	DataOffset  uint32
	RawDataSize uint32
	GPA         uint64 // MemoryAddress
	Size        uint64 // MemoryDataSize
	Type        SectionType
	Attributes  Attributes
}

// End is the first GPA past the section.
func (s Section) End() uint64 { return s.GPA + s.Size }

// Pages is the section's size in 4 KiB pages.
func (s Section) Pages() uint64 { return s.Size / Alignment }

// FromImage reports whether the section's bytes come from the image (BFV
// and CFV); the others start as the VMM fills them.
func (s Section) FromImage() bool { return s.Type == BFV || s.Type == CFV }

// Firmware is a parsed TDVF image.
type Firmware struct {
	Image []byte
	// MetadataOffset is the file offset of the "TDVF" descriptor.
	MetadataOffset int64
	Sections       []Section
}

// Data returns the image from DataOffset for the whole of a BFV or CFV
// section, what QEMU copies (QEMU: tdx_finalize_vm() sets mem_ptr to the
// image + data_offset and nr_pages covers MemoryDataSize, so bytes past
// RawDataSize come from the image too); nil for the sections the VMM fills.
func (f *Firmware) Data(s Section) []byte {
	if !s.FromImage() {
		return nil
	}
	return f.Image[s.DataOffset : uint64(s.DataOffset)+s.Size]
}

// RawData returns the section's RawDataSize bytes at DataOffset (nil for
// the sections the VMM fills).
func (f *Firmware) RawData(s Section) []byte {
	if !s.FromImage() {
		return nil
	}
	return f.Image[s.DataOffset : s.DataOffset+s.RawDataSize]
}

// HOB returns the TD_HOB section (QEMU: tdx_get_hob_entry(), the first one).
func (f *Firmware) HOB() Section {
	for _, s := range f.Sections {
		if s.Type == TDHOB {
			return s
		}
	}
	return Section{} // Parse refuses firmware without one
}

// FormatError is an image that is not TDVF or is damaged: what is wrong
// and where.
type FormatError struct {
	Offset int64  // file offset of the offending field
	What   string // the structure or field
	Rule   string // what is wrong with it
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("offset %#x: %s: %s", e.Offset, e.What, e.Rule)
}

func bad(off int64, what, format string, a ...any) error {
	return &FormatError{Offset: off, What: what, Rule: fmt.Sprintf(format, a...)}
}

// Load reads and parses a firmware file. A file that cannot be read is an
// *os.PathError; a file that is not valid TDVF a *FormatError.
func Load(path string) (*Firmware, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, &os.PathError{Op: "read", Path: path, Err: errors.New("not a regular file")}
	}
	if st.Size() > MaxImageBytes {
		return nil, bad(0, "image", "%d bytes: larger than %d MiB", st.Size(), MaxImageBytes>>20)
	}
	img, err := io.ReadAll(io.LimitReader(f, MaxImageBytes+1))
	if err != nil {
		return nil, err
	}
	return Parse(img)
}

// Parse parses a TDVF image. It keeps img (Data slices into it).
func Parse(img []byte) (*Firmware, error) {
	size := int64(len(img))
	// QEMU: x86_bios_rom_init() ("could not load PC BIOS").
	if size == 0 || size%65536 != 0 {
		return nil, bad(0, "image", "%d bytes: QEMU loads a firmware image only in whole 64 KiB", size)
	}
	if size > MaxImageBytes {
		return nil, bad(0, "image", "%d bytes: larger than %d MiB", size, MaxImageBytes>>20)
	}
	mdOff, err := metadataOffset(img)
	if err != nil {
		return nil, err
	}
	fw := &Firmware{Image: img, MetadataOffset: mdOff}
	if err := fw.parseMetadata(); err != nil {
		return nil, err
	}
	return fw, nil
}

// metadataOffset finds the TDX metadata offset entry of the OVMF GUIDed
// table and returns the descriptor's file offset. QEMU:
// pc_system_parse_ovmf_flash(), pc_system_ovmf_table_find(),
// tdvf_get_metadata().
func metadataOffset(img []byte) (int64, error) {
	size := int64(len(img))
	footer := size - footerFromEnd
	if [16]byte(img[footer:footer+16]) != TableFooterGUID {
		return 0, bad(footer, "OVMF table footer GUID", "not 96b582de-1fb2-45f7-baea-a366c55a082d: not an OVMF image")
	}
	// The table grows down from the footer: each entry is its data, a
	// 2-byte length of the whole entry, then its GUID.
	lenAt := footer - 2
	total := int64(binary.LittleEndian.Uint16(img[lenAt:])) - 16 - 2
	if total < 0 || total > lenAt {
		return 0, bad(lenAt, "OVMF table length", "%d: the table would start before the image", total+18)
	}
	end, left := lenAt, total
	for left >= 18 {
		g := [16]byte(img[end-16 : end])
		n := int64(binary.LittleEndian.Uint16(img[end-18:]))
		if n < 18 || n > left {
			return 0, bad(end-18, "OVMF table entry length", "%d: must cover its length and GUID (18) and fit the table (%d left)", n, left)
		}
		start := end - n
		if g == MetadataOffsetGUID {
			// QEMU reads a 4-byte offset at the start of the entry
			// whatever its length; an entry too short for it would make
			// QEMU read its own length and GUID.
			if n < 18+4 {
				return 0, bad(end-18, "TDX metadata offset entry", "length %d: too short for its 4-byte offset", n)
			}
			v := int64(binary.LittleEndian.Uint32(img[start:]))
			md := size - v
			if v > size || md+descriptorLen > size {
				return 0, bad(start, "TDX metadata offset", "%#x: the metadata would lie outside the image", v)
			}
			return md, nil
		}
		end, left = start, left-n
	}
	return 0, bad(lenAt, "OVMF table", "no TDX metadata offset entry (GUID e47a6535-984a-4798-865e-4685a7bf8ec2): not a TDX firmware")
}

// parseMetadata checks the descriptor and every section. QEMU:
// tdvf_get_metadata(), tdvf_parse_metadata(),
// tdvf_parse_and_check_section_entry().
func (fw *Firmware) parseMetadata() error {
	img, off := fw.Image, fw.MetadataOffset
	size := int64(len(img))
	le := binary.LittleEndian
	if sig := le.Uint32(img[off:]); sig != Signature {
		return bad(off, "TDVF metadata signature", "%q: want \"TDVF\"", img[off:off+4])
	}
	length := int64(le.Uint32(img[off+4:]))
	if off+length > size {
		return bad(off+4, "TDVF metadata length", "%d: runs past the end of the image", length)
	}
	if v := le.Uint32(img[off+8:]); v != Version {
		return bad(off+8, "TDVF metadata version", "%d: only version %d is defined", v, Version)
	}
	n := int64(le.Uint32(img[off+12:]))
	if n < 2 {
		return bad(off+12, "TDVF metadata section count", "%d: QEMU needs at least 2", n)
	}
	if length != descriptorLen+n*entryLen {
		return bad(off+4, "TDVF metadata length", "%d: %d sections need %d", length, n, descriptorLen+n*entryLen)
	}
	// n is now bounded by the image: n*32 < size.
	fw.Sections = make([]Section, 0, n)
	for i := range n {
		at := off + descriptorLen + i*entryLen
		e := img[at : at+entryLen]
		s := Section{Index: int(i), EntryOffset: at, DataOffset: le.Uint32(e[0:]), RawDataSize: le.Uint32(e[4:]),
			GPA: le.Uint64(e[8:]), Size: le.Uint64(e[16:]), Type: SectionType(le.Uint32(e[24:])), Attributes: Attributes(le.Uint32(e[28:]))}
		if err := fw.checkSection(s); err != nil {
			return err
		}
		fw.Sections = append(fw.Sections, s)
	}
	if err := fw.checkOverlap(); err != nil {
		return err
	}
	if fw.HOB().Type != TDHOB || fw.HOB().Size == 0 {
		// QEMU: tdx_get_hob_entry() ("TDVF metadata doesn't specify
		// TD_HOB location").
		return bad(off, "TDVF metadata", "no TD_HOB section")
	}
	return nil
}

// checkSection makes QEMU's checks of one entry
// (tdvf_parse_and_check_section_entry()), then those QEMU leaves to KVM or
// does not make: a section must not be empty (KVM_TDX_INIT_MEM_REGION
// refuses zero pages), a BFV or CFV must start on a page of the image (KVM
// refuses a source_addr not page aligned) and lie in it (QEMU would read
// past its copy of the image), a section must stay in the TD's private GPA
// space and not overlap another (TDH.MEM.PAGE.ADD of a mapped GPA fails;
// checkOverlap), and TD_HOB and TempMem must not be measured (the TDVF
// design guide gives them no MR.EXTEND; a measured HOB would tie the MRTD
// to the TD's memory size).
func (fw *Firmware) checkSection(s Section) error {
	at := s.EntryOffset
	name := fmt.Sprintf("section %d (%s)", s.Index, s.Type)
	switch {
	case s.Size < uint64(s.RawDataSize):
		return bad(at+16, name, "MemoryDataSize %#x is smaller than RawDataSize %#x", s.Size, s.RawDataSize)
	case s.GPA%Alignment != 0:
		return bad(at+8, name, "MemoryAddress %#x is not 4 KiB aligned", s.GPA)
	case s.Size%Alignment != 0:
		return bad(at+16, name, "MemoryDataSize %#x is not 4 KiB aligned", s.Size)
	}
	switch s.Type {
	case BFV, CFV:
		if s.RawDataSize == 0 {
			return bad(at+4, name, "RawDataSize is 0: a %s is copied from the image", s.Type)
		}
	case TDHOB, TempMem:
		if s.RawDataSize != 0 {
			return bad(at+4, name, "RawDataSize %#x: a %s carries no data from the image", s.RawDataSize, s.Type)
		}
		if s.Attributes&MRExtend != 0 {
			return bad(at+28, name, "a %s must not be measured (MR.EXTEND)", s.Type)
		}
	default:
		return bad(at+24, name, "section type %d is not one QEMU builds a TD from (BFV, CFV, TD_HOB, TempMem)", uint32(s.Type))
	}
	if s.Size == 0 {
		return bad(at+16, name, "MemoryDataSize is 0: KVM_TDX_INIT_MEM_REGION refuses an empty region")
	}
	if s.End() > maxGPA || s.End() < s.GPA {
		return bad(at+8, name, "[%#x, %#x) leaves the private GPA space (below %#x)", s.GPA, s.GPA+s.Size, uint64(maxGPA))
	}
	if s.FromImage() && s.DataOffset%Alignment != 0 {
		// QEMU passes image + DataOffset as source_addr, and
		// KVM_TDX_INIT_MEM_REGION refuses one not page aligned.
		return bad(at, name, "DataOffset %#x is not 4 KiB aligned: KVM_TDX_INIT_MEM_REGION refuses the source", s.DataOffset)
	}
	if s.FromImage() && uint64(s.DataOffset)+s.Size > uint64(len(fw.Image)) {
		return bad(at, name, "DataOffset %#x + MemoryDataSize %#x runs past the end of the image (%#x)", s.DataOffset, s.Size, len(fw.Image))
	}
	return nil
}

// checkOverlap refuses sections whose GPA ranges overlap (sorted by GPA,
// each need only be compared with the one before it).
func (fw *Firmware) checkOverlap() error {
	byGPA := slices.Clone(fw.Sections)
	slices.SortStableFunc(byGPA, func(a, b Section) int { return cmp.Compare(a.GPA, b.GPA) })
	for i := 1; i < len(byGPA); i++ {
		a, b := byGPA[i-1], byGPA[i]
		if b.GPA < a.End() {
			if b.Index < a.Index {
				a, b = b, a
			}
			return bad(b.EntryOffset+8, fmt.Sprintf("section %d (%s)", b.Index, b.Type), "[%#x, %#x) overlaps section %d (%s) [%#x, %#x)",
				b.GPA, b.End(), a.Index, a.Type, a.GPA, a.End())
		}
	}
	return nil
}
