package tdvf

import (
	"encoding/binary"
	"fmt"
)

// RAMEntry is one range of the TD's RAM as the VMM tells TDVF of it
// (QEMU: TdxRamEntry): Added when the VMM put its pages in with
// TDH.MEM.PAGE.ADD (TD_HOB and TempMem sections), else unaccepted memory
// the guest accepts itself.
type RAMEntry struct {
	GPA, Length uint64
	Added       bool
}

// HOB constants (QEMU: include/standard-headers/uefi/uefi.h, hw/i386/tdvf-hob.h).
const (
	hobTypeHandoff            = 0x0001
	hobTypeResourceDescriptor = 0x0003
	hobTypeEndOfHOBList       = 0xffff
	hobHandoffTableVersion    = 0x0009

	resourceSystemMemory     = 0x00000000
	resourceMemoryUnaccepted = 0x00000007
	// EFI_RESOURCE_ATTRIBUTE_PRESENT | INITIALIZED | TESTED: QEMU's
	// EFI_RESOURCE_ATTRIBUTE_TDVF_PRIVATE and _TDVF_UNACCEPTED alike.
	resourceAttrTDVF = 0x1 | 0x2 | 0x4

	handoffLen  = 56 // EFI_HOB_HANDOFF_INFO_TABLE
	resourceLen = 48 // EFI_HOB_RESOURCE_DESCRIPTOR
	headerLen   = 8  // EFI_HOB_GENERIC_HEADER
)

// HOBLen is the length of the HOB list for n RAM entries.
func HOBLen(n int) uint64 { return handoffLen + uint64(n)*resourceLen + headerLen }

// BuildHOB writes the HOB list QEMU puts in the TD_HOB section at gpa
// (QEMU: tdvf_hob_create(), tdvf_hob_add_memory_resources()): the handoff
// table (version 9, boot mode 0, the memory bounds left zero, EfiEndOfHobList
// the GPA just past the list), one resource descriptor per RAM entry in
// the order given (QEMU sorts them by address first) — system memory for
// added ranges, unaccepted memory for the rest, both present, initialized
// and tested — and the end-of-list header. Every structure is a multiple
// of 8 bytes, so QEMU's 8-byte alignment adds no padding. It returns the
// list, shorter than size; a list that does not fit is QEMU's "TD_HOB
// overrun".
func BuildHOB(gpa, size uint64, ram []RAMEntry) ([]byte, error) {
	n := HOBLen(len(ram))
	if n > size {
		return nil, fmt.Errorf("tdvf: TD_HOB overrun: %d RAM entries need %d bytes, the section has %d", len(ram), n, size)
	}
	b := make([]byte, n)
	le := binary.LittleEndian
	header := func(at int, typ, length uint16) {
		le.PutUint16(b[at:], typ)
		le.PutUint16(b[at+2:], length)
	}
	header(0, hobTypeHandoff, handoffLen)
	le.PutUint32(b[8:], hobHandoffTableVersion)
	le.PutUint64(b[48:], gpa+n) // EfiEndOfHobList
	at := handoffLen
	for _, e := range ram {
		header(at, hobTypeResourceDescriptor, resourceLen)
		typ := uint32(resourceMemoryUnaccepted)
		if e.Added {
			typ = resourceSystemMemory
		}
		// Owner (16 bytes at +8) stays the zero GUID.
		le.PutUint32(b[at+24:], typ)
		le.PutUint32(b[at+28:], resourceAttrTDVF)
		le.PutUint64(b[at+32:], e.GPA)
		le.PutUint64(b[at+40:], e.Length)
		at += resourceLen
	}
	header(at, hobTypeEndOfHOBList, headerLen)
	return b, nil
}
