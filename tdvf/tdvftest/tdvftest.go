// Package tdvftest generates TDVF images for tests: the bytes edk2's
// ResetVector lays out at the end of an OVMF image (the GUIDed table with
// the TDX metadata offset entry) and the "TDVF" descriptor with its
// sections, written field by field with encoding/binary, so tests need no
// committed binary.
package tdvftest

import "encoding/binary"

// Section is one raw TDVF_SECTION entry.
type Section struct {
	DataOffset, RawDataSize uint32
	GPA, Size               uint64
	Type, Attributes        uint32
}

// Image describes a generated image.
type Image struct {
	Size       int       // bytes, a multiple of 64 KiB
	MetadataAt int       // file offset of the "TDVF" descriptor
	Sections   []Section // in metadata order
}

// GUIDs as stored (EFI_GUID, first three fields little-endian).
var (
	footerGUID   = [16]byte{0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d}
	metadataGUID = [16]byte{0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2}
	// otherGUID stands for the SEV entries a real table has before it.
	otherGUID = [16]byte{0x66, 0x65, 0x88, 0xdc, 0x4a, 0x98, 0x98, 0x47, 0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc}
)

// Fill is the byte at file offset i of a generated image outside its
// metadata and table: a pattern that differs in every 256-byte chunk.
func Fill(i int) byte { return byte(i*7 + i>>8 + i>>16) }

// Build writes the image.
func (im Image) Build() []byte {
	b := make([]byte, im.Size)
	for i := range b {
		b[i] = Fill(i)
	}
	le := binary.LittleEndian
	// Descriptor and sections.
	at := im.MetadataAt
	copy(b[at:], "TDVF")
	le.PutUint32(b[at+4:], uint32(16+32*len(im.Sections)))
	le.PutUint32(b[at+8:], 1)
	le.PutUint32(b[at+12:], uint32(len(im.Sections)))
	for i, s := range im.Sections {
		e := b[at+16+32*i:]
		le.PutUint32(e[0:], s.DataOffset)
		le.PutUint32(e[4:], s.RawDataSize)
		le.PutUint64(e[8:], s.GPA)
		le.PutUint64(e[16:], s.Size)
		le.PutUint32(e[24:], s.Type)
		le.PutUint32(e[28:], s.Attributes)
	}
	// The GUIDed table, growing down from the footer 48 bytes before the
	// end: [other: 4 bytes, len, GUID] [metadata offset: 4 bytes, len,
	// GUID] [table length, footer GUID].
	footer := im.Size - 48
	copy(b[footer:], footerGUID[:])
	end := footer - 2
	entry := func(data []byte, g [16]byte) {
		n := len(data) + 18
		copy(b[end-16:], g[:])
		le.PutUint16(b[end-18:], uint16(n))
		copy(b[end-n:], data)
		end -= n
	}
	off := make([]byte, 4)
	le.PutUint32(off, uint32(im.Size-im.MetadataAt))
	entry(off, metadataGUID)
	entry([]byte{1, 2, 3, 4}, otherGUID)
	le.PutUint16(b[footer-2:], uint16(footer-end))
	return b
}

// Golden is the golden synthetic image: 64 KiB mapped at 4 GiB - 64 KiB
// like OVMF, a CFV, a measured BFV whose RawDataSize is a page short of its
// MemoryDataSize (the page after comes from the image too), the metadata
// inside the BFV, a TD_HOB, a TempMem and a PAGE.AUG TempMem.
func Golden() Image {
	return Image{Size: 64 << 10, MetadataAt: 0xf000, Sections: []Section{
		{DataOffset: 0x2000, RawDataSize: 0xd000, GPA: 0xffff2000, Size: 0xe000, Type: 0, Attributes: 1},
		{DataOffset: 0, RawDataSize: 0x2000, GPA: 0xffff0000, Size: 0x2000, Type: 1},
		{GPA: 0x800000, Size: 0x1000, Type: 2},
		{GPA: 0x801000, Size: 0x2000, Type: 3},
		{GPA: 0x900000, Size: 0x1000, Type: 3, Attributes: 2},
	}}
}
