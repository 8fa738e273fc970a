package mmu

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/internal/enumname"
)

// HugePages is the "hugepages" policy (docs/policies.md): the largest level KVM
// maps private memory at. The zero value is the upstream choice, 2M.
type HugePages uint8

// Huge-page policies.
const (
	HugePages2M  HugePages = iota // 2 MiB leaves (TDX huge-page series, patch 24)
	HugePagesOff                  // 4 KiB only (mainline v6.19)
	HugePages1G                   // 1 GiB leaves too, when the TDX module allows 1G AUG
)

var hugePagesNames = enumname.New[HugePages]("hugepages", "HugePages", "2M", "off", "1G")

func (h HugePages) String() string { return hugePagesNames.String(h) }

// MaxLevel is the policy's cap on a private mapping's level.
func (h HugePages) MaxLevel() addr.Level {
	switch h {
	case HugePagesOff:
		return addr.Level4K
	case HugePages1G:
		return addr.Level1G
	}
	return addr.Level2M
}

// ParseHugePages reads "off", "2M" or "1G".
func ParseHugePages(s string) (HugePages, error) { return hugePagesNames.Parse(s) }

// MaxOrderFrom is the "max_order_from" policy (docs/policies.md): where
// KVM learns the largest order it may map a private page at. The zero
// value is the upstream choice.
type MaxOrderFrom uint8

// Sources of the max mapping order.
const (
	// MaxOrderFromGmem asks guest_memfd (kvm_gmem_mapping_order), the
	// owner of the answer.
	MaxOrderFromGmem MaxOrderFrom = iota
	// MaxOrderFromFolio uses the order of the folio kvm_gmem_get_pfn
	// returned, the design Sean NAK'd: it maps beyond what guest_memfd
	// allows whenever the folio is larger than the mapping guest_memfd
	// would permit (e.g. a binding whose offset is not aligned with its
	// GFNs).
	MaxOrderFromFolio
)

var maxOrderFromNames = enumname.New[MaxOrderFrom]("max_order_from", "MaxOrderFrom", "gmem", "folio")

func (o MaxOrderFrom) String() string { return maxOrderFromNames.String(o) }

// ParseMaxOrderFrom reads "gmem" or "folio".
func ParseMaxOrderFrom(s string) (MaxOrderFrom, error) { return maxOrderFromNames.Parse(s) }

// levelForOrder is kvm_max_level_for_order().
func levelForOrder(o addr.Order) addr.Level {
	switch {
	case o >= addr.Order1G:
		return addr.Level1G
	case o >= addr.Order2M:
		return addr.Level2M
	}
	return addr.Level4K
}
