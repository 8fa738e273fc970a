package mmu

import "fmt"

// Root names one of a VM's TDP roots. Kernel: enum kvm_tdp_mmu_root_types
// (KVM_DIRECT_ROOTS, KVM_MIRROR_ROOTS) and kvm_gfn_range_filter_to_root_types().
type Root uint8

// The roots. The values index Stats' per-root arrays and are the fourth
// argument of the MMU's events.
const (
	// DirectRoot maps shared GPAs (with the shared bit, for a TD), and
	// everything for a VM without a mirror root.
	DirectRoot Root = iota
	// MirrorRoot maps a TD's private GPAs; every change is carried into
	// the TDX module's Secure EPT through External.
	MirrorRoot
	rootCount
)

func (r Root) String() string {
	switch r {
	case DirectRoot:
		return "direct"
	case MirrorRoot:
		return "mirror"
	}
	return fmt.Sprintf("Root(%d)", uint8(r))
}
