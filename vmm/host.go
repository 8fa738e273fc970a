package vmm

import (
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// HostConfig describes the machine TDs run on.
type HostConfig struct {
	Bytes       uint64 // host memory
	DynamicPAMT bool
	Packages    int
	Allow1GAug  bool // the TDX module AUGs 1G pages
	// NoEnhancedDemote: the module lacks TDX_FEATURES0
	// ENHANCED_DEMOTE_INTERRUPTIBILITY (tdxmodule.Config.NoEnhancedDemote).
	NoEnhancedDemote bool
	// KVM is the modelled KVM; nil means kvm.DefaultConfig().
	KVM *kvm.Config
	// TDX is the kernel's TDX host code (the Dynamic PAMT refcounts).
	TDX tdx.HostConfig
	// TDs are the TDs the host is sized for: their HugeTLB guest_memfds
	// get their pages reserved in the hugetlb pools at boot.
	TDs []Config
}

// NewHost boots a host: its memory (with the hugetlb pools the TDs need),
// the TDX module guarding that memory, and KVM with its TDX code.
func NewHost(hc HostConfig, sink event.Sink) (*tdx.Host, error) {
	var huge2M, huge1G int
	for _, c := range hc.TDs {
		a, b := HugePoolPages(c)
		huge2M, huge1G = huge2M+a, huge1G+b
	}
	mem, err := hostmem.New(hostmem.Config{Bytes: hc.Bytes, Huge2M: huge2M, Huge1G: huge1G}, sink)
	if err != nil {
		return nil, err
	}
	mod, err := tdxmodule.New(mem, tdxmodule.Config{DynamicPAMT: hc.DynamicPAMT, Packages: hc.Packages, Allow1GAug: hc.Allow1GAug, NoEnhancedDemote: hc.NoEnhancedDemote}, sink)
	if err != nil {
		return nil, err
	}
	mem.SetGuard(mod)
	kcfg := kvm.DefaultConfig()
	if hc.KVM != nil {
		kcfg = *hc.KVM
	}
	return tdx.NewHost(kvm.NewSystem(kcfg, mem, sink), mod, hc.TDX)
}

// firstError keeps the first error a run's threads report.
type firstError struct{ err error }

func (f *firstError) set(e error) {
	if f.err == nil && e != nil {
		f.err = e
	}
}
