package scenario

import (
	"errors"
	"fmt"

	"github.com/tdxsim/tdxsim/kernel"
)

// SetKernel makes the run stand for the kernel profile name (--kernel):
// the profile's policy values become the defaults of every policy the
// file and --policy do not set, and a setting the profile's tree does not
// have (a Fixed policy given another value, conversion: kvm under
// exclusive attributes) is an *InputError naming both.
func (f *File) SetKernel(name string) error {
	f.Scenario.Kernel = name
	f.kernelFlag = true
	if err := f.resolveFlag(); err != nil {
		return err
	}
	for i := range f.Scenario.TDs {
		if err := f.resolveConversion(i); err != nil {
			return err
		}
	}
	return f.checkContentSteps()
}

// Profile returns the kernel profile the file stands for.
func (f *File) Profile() kernel.Profile {
	p, err := kernel.Lookup(f.Scenario.Kernel)
	if err != nil {
		p, _ = kernel.Lookup(kernel.Default)
	}
	return p
}

// resolveFlag re-resolves the policies after --kernel or --policy; enum
// errors then come from a --policy value.
func (f *File) resolveFlag() error {
	err := f.resolvePolicies()
	var ie *InputError
	if errors.As(err, &ie) && ie.File == f.Path {
		ie.File, ie.Line = "--policy", 0
	}
	return err
}

// kernelWhere names where the kernel was chosen, for error messages.
func (f *File) kernelWhere() string {
	k := f.Scenario.Kernel
	if f.kernelFlag {
		return "--kernel " + k
	}
	if l, ok := f.lines["kernel"]; ok {
		return fmt.Sprintf("kernel: %s (%s:%d)", k, f.Path, l)
	}
	return "the default kernel " + k
}

// explicitPolicy reports whether key was set by the file or a --policy.
func (f *File) explicitPolicy(key string) bool {
	if _, ok := f.lines["policies."+key]; ok {
		return true
	}
	for _, kv := range f.flagPolicies {
		if kv[0] == key {
			return true
		}
	}
	return false
}

// resolvePolicies computes the policies: the file's, then the kernel
// profile's for every key neither the file nor --policy set, then the
// --policy overrides, then the model's defaults; and checks the result
// against the profile's fixed values.
func (f *File) resolvePolicies() error {
	s := &f.Scenario
	if s.Kernel == "" {
		s.Kernel = kernel.Default
	}
	prof, err := kernel.Lookup(s.Kernel)
	if err != nil {
		field := "kernel"
		if f.kernelFlag {
			return &InputError{File: "--kernel", Field: field, Rule: err.Error()}
		}
		return f.bad(field, "%v", err)
	}
	s.Policies = f.rawPolicies
	for _, pol := range prof.Policies {
		if !f.explicitPolicy(pol.Key) {
			if err := setPolicy(&s.Policies, pol.Key, pol.Value); err != nil {
				return err
			}
		}
	}
	for _, kv := range f.flagPolicies {
		if err := setPolicy(&s.Policies, kv[0], kv[1]); err != nil {
			return err
		}
	}
	if _, set := f.lines["host.tdx.max_level"]; !set {
		s.Host.TDX.MaxLevel = ""
	}
	if err := f.validatePolicies(); err != nil {
		return err
	}
	for _, pol := range prof.Policies {
		if !pol.Fixed || !f.explicitPolicy(pol.Key) {
			continue
		}
		if v := policyValue(&s.Policies, pol.Key); v != pol.Value {
			return f.conflict(pol.Key, v, fmt.Sprintf("%s has only %s (Series/tree: %s)", f.kernelWhere(), pol, pol.Source))
		}
	}
	return f.checkMaxPFN(prof)
}

// checkMaxPFN rejects Dynamic PAMT on a host whose max_pfn needs more
// physical address bits than the profile's Dynamic PAMT runs on. Series:
// "[PATCH v6 10/11] x86/virt/tdx: Enable Dynamic PAMT"
// (tdx_supports_dynamic_pamt() requires x86_phys_bits <= 48).
func (f *File) checkMaxPFN(prof kernel.Profile) error {
	bits := prof.DPAMTMaxPhysBits
	mp := uint64(f.Scenario.Host.MaxPFN)
	if bits == 0 || !*f.Scenario.Policies.DynamicPAMT || mp <= 1<<bits {
		return nil
	}
	bad := f.bad
	if f.kernelFlag {
		bad = func(field, format string, args ...any) error {
			return &InputError{File: "--kernel", Field: field, Rule: fmt.Sprintf(format, args...)}
		}
	}
	return bad("host.max_pfn", "%#x with dynamic_pamt: true conflicts with %s: RAM above 2^%d means x86_phys_bits > %d, where its tdx_supports_dynamic_pamt() is false (\"[PATCH v6 10/11] x86/virt/tdx: Enable Dynamic PAMT\"); set dynamic_pamt: false or host.max_pfn at most %#x", mp, f.kernelWhere(), bits, bits, uint64(1)<<bits)
}

// conflict is the InputError for policy key set to v against rule.
func (f *File) conflict(key, v, rule string) error {
	for _, kv := range f.flagPolicies {
		if kv[0] == key {
			return &InputError{File: "--policy", Field: "policies." + key, Rule: fmt.Sprintf("%s=%s conflicts with %s", key, v, rule)}
		}
	}
	return f.bad("policies."+key, "%s: conflicts with %s", v, rule)
}

// resolveConversion sets tds[i].conversion's default from the profile
// and rejects per-VM attributes where the profile makes guest_memfd
// attributes exclusive. Series: "guest_memfd: In-place conversion
// support" v8 (the vm_memory_attributes module parameter: with it off,
// KVM_SET_MEMORY_ATTRIBUTES on the VM fd is not offered).
func (f *File) resolveConversion(i int) error {
	td := &f.Scenario.TDs[i]
	at := fmt.Sprintf("tds[%d].conversion", i)
	prof := f.Profile()
	if _, given := f.lines[at]; !given {
		td.Conversion = "kvm"
		if prof.Conversion != "" {
			td.Conversion = prof.Conversion
		}
	}
	if td.Conversion == "kvm" && prof.ExclusiveAttributes {
		param := prof.ExclusiveParam
		if param == "" {
			param = "its module parameter"
		}
		return f.bad(at, "kvm (per-VM memory attributes) conflicts with %s: %s makes guest_memfd attributes exclusive of per-VM ones; use conversion: in_place or another kernel", f.kernelWhere(), param)
	}
	return nil
}

// ForceKernel makes a generated scenario stand for the profile name: it
// sets Kernel and writes the profile's fixed policy values over whatever
// the generator picked, so the scenario is valid under it.
func (s *Scenario) ForceKernel(name string) error {
	prof, err := kernel.Lookup(name)
	if err != nil {
		return &InputError{File: "--kernel", Field: "kernel", Rule: err.Error()}
	}
	s.Kernel = name
	for _, pol := range prof.Policies {
		if pol.Fixed {
			if err := setPolicy(&s.Policies, pol.Key, pol.Value); err != nil {
				return err
			}
		}
	}
	if prof.ExclusiveAttributes {
		for i := range s.TDs {
			s.TDs[i].Conversion = "in_place"
		}
	}
	return nil
}
