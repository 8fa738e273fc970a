package mmu

import (
	"fmt"

	"github.com/tdxsim/tdxsim/addr"
)

// SPTE is one shadow page-table entry as the TDP MMU stores it, with the
// kernel's bit layout (arch/x86/kvm/mmu/spte.h) for the bits the model uses.
type SPTE uint64

// SPTE bits.
const (
	spteRWX          SPTE = 0x7     // EPT read, write, execute
	sptePageSize     SPTE = 1 << 7  // PT_PAGE_SIZE_MASK: a huge leaf
	spteMMUPresent   SPTE = 1 << 11 // SPTE_MMU_PRESENT_MASK
	sptePFNMask      SPTE = (1<<52 - 1) &^ 0xfff
	shadowNonPresent SPTE = 1 << 63 // SHADOW_NONPRESENT_VALUE: EPT suppress-#VE

	// FrozenSPTE marks an entry whose change is in flight, so that a
	// racing walker backs off (RET_PF_RETRY) instead of using or changing
	// it. Kernel: FROZEN_SPTE = SHADOW_NONPRESENT_VALUE | 0x5a0.
	FrozenSPTE SPTE = shadowNonPresent | 0x5a0

	// NonPresent is what a zapped entry holds.
	NonPresent SPTE = shadowNonPresent
)

// Present is is_shadow_present_pte(): neither zero, non-present nor frozen.
func (s SPTE) Present() bool { return s&spteMMUPresent != 0 }

// Frozen reports whether the entry is FROZEN_SPTE.
func (s SPTE) Frozen() bool { return s == FrozenSPTE }

// Leaf is is_last_spte(): a 4K entry, or a huge page at a higher level.
func (s SPTE) Leaf(level addr.Level) bool { return level == addr.Level4K || s&sptePageSize != 0 }

// PFN is spte_to_pfn(): the page mapped, or the child page table.
func (s SPTE) PFN() addr.PFN { return addr.PFN((s & sptePFNMask) >> addr.PageShift) }

func (s SPTE) String() string {
	switch {
	case s == FrozenSPTE:
		return "FROZEN"
	case !s.Present():
		return "non-present"
	case s&sptePageSize != 0:
		return fmt.Sprintf("huge leaf %s", s.PFN())
	}
	return fmt.Sprintf("present %s", s.PFN())
}

// makeLeaf is make_spte() for a writable mapping: private (mirror) leaves
// are always RWX (tdx_sept_map_leaf_spte warns otherwise), and the model
// makes shared ones RWX too.
func makeLeaf(pfn addr.PFN, level addr.Level) SPTE {
	s := SPTE(pfn.HPA())&sptePFNMask | spteMMUPresent | spteRWX
	if level > addr.Level4K {
		s |= sptePageSize
	}
	return s
}

// makeNonLeaf is make_nonleaf_spte(): points at a child page table.
func makeNonLeaf(child addr.PFN) SPTE {
	return SPTE(child.HPA())&sptePFNMask | spteMMUPresent | spteRWX
}

// spteIndex is SPTE_INDEX(gfn << PAGE_SHIFT, level) for a TDX level (0 = 4K).
func spteIndex(gfn addr.GFN, level addr.Level) int {
	return int(uint64(gfn)>>(9*uint(level))) & 511
}
