// Package addr holds the address and size types that the layers would
// otherwise confuse: guest physical (GPA, GFN), host physical (HPA, PFN),
// mapping level and allocation order.
//
// Kernel counterparts: gpa_t, gfn_t, hpa_t, kvm_pfn_t, enum pg_level and the
// buddy allocator's order. TDX levels are 0-based (0 = 4K); KVM's pg_level is
// 1-based (PG_LEVEL_4K = 1). Level here is the TDX (0-based) numbering, and the
// conversion to KVM's is explicit where KVM code needs it.
package addr

import (
	"fmt"
	"strconv"
)

// PageShift is log2 of the base page size.
const PageShift = 12

// PageSize is the base page size, 4 KiB.
const PageSize = 1 << PageShift

// Sizes of the mapping levels.
const (
	Size4K = 1 << 12
	Size2M = 1 << 21
	Size1G = 1 << 30
)

// Binary units, as scenario and layout files write sizes (ParseSize).
const (
	KiB = 1 << 10
	MiB = 1 << 20
	GiB = 1 << 30
	TiB = 1 << 40
)

// GPA is a guest physical address.
type GPA uint64

// GFN is a guest frame number (GPA >> 12).
type GFN uint64

// HPA is a host physical address.
type HPA uint64

// PFN is a host page frame number (HPA >> 12).
type PFN uint64

// Order is a buddy-allocator order: a block of 1<<Order base pages.
type Order uint8

// Orders of the mapping sizes.
const (
	Order4K Order = 0
	Order2M Order = 9
	Order1G Order = 18
)

// Level is a page-table level in TDX numbering: 0 = 4 KiB (PT), 1 = 2 MiB
// (PD), 2 = 1 GiB (PDPT), 3 = PML4, 4 = PML5.
type Level uint8

// The mapping levels.
const (
	Level4K Level = 0
	Level2M Level = 1
	Level1G Level = 2
)

// GFN returns the frame number of a GPA.
func (g GPA) GFN() GFN { return GFN(g >> PageShift) }

// GPA returns the address of a frame.
func (g GFN) GPA() GPA { return GPA(g << PageShift) }

// PFN returns the frame number of an HPA.
func (h HPA) PFN() PFN { return PFN(h >> PageShift) }

// HPA returns the address of a frame.
func (p PFN) HPA() HPA { return HPA(p << PageShift) }

// Pages returns the number of base pages in a block of this order.
func (o Order) Pages() uint64 { return 1 << o }

// Bytes returns the size of a block of this order.
func (o Order) Bytes() uint64 { return PageSize << o }

// Order returns the buddy order of a mapping at this level (0, 9, 18, ...).
func (l Level) Order() Order { return Order(9 * l) }

// Bytes returns the size mapped by one leaf at this level.
func (l Level) Bytes() uint64 { return PageSize << (9 * uint(l)) }

// Pages returns the number of base pages mapped by one leaf at this level.
func (l Level) Pages() uint64 { return 1 << (9 * uint(l)) }

// String prints a level by the size it maps (4K, 2M, 1G, 512G, 256T).
func (l Level) String() string {
	switch l {
	case 0:
		return "4K"
	case 1:
		return "2M"
	case 2:
		return "1G"
	case 3:
		return "512G"
	case 4:
		return "256T"
	}
	return fmt.Sprintf("level(%d)", uint8(l))
}

func (g GPA) String() string { return fmt.Sprintf("gpa 0x%x", uint64(g)) }
func (g GFN) String() string { return fmt.Sprintf("gfn 0x%x", uint64(g)) }
func (h HPA) String() string { return fmt.Sprintf("hpa 0x%x", uint64(h)) }
func (p PFN) String() string { return fmt.Sprintf("pfn 0x%x", uint64(p)) }

// ParseSize parses a size or address given as decimal, 0x hex, or with a
// K/M/G/T suffix (binary multiples), as scenario and layout files write them.
func ParseSize(s string) (uint64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty size")
	}
	mult := uint64(1)
	switch s[len(s)-1] {
	case 'k', 'K':
		mult = KiB
	case 'm', 'M':
		mult = MiB
	case 'g', 'G':
		mult = GiB
	case 't', 'T':
		mult = TiB
	}
	num := s
	if mult != 1 {
		num = s[:len(s)-1]
	}
	var v uint64
	var err error
	if len(num) > 2 && (num[:2] == "0x" || num[:2] == "0X") {
		v, err = strconv.ParseUint(num[2:], 16, 64)
	} else {
		v, err = strconv.ParseUint(num, 10, 64)
	}
	if err != nil {
		return 0, fmt.Errorf("size %q: not a decimal, 0x-hex or K/M/G/T-suffixed number", s)
	}
	if v != 0 && (v*mult)/mult != v {
		return 0, fmt.Errorf("size %q overflows 64 bits", s)
	}
	return v * mult, nil
}
