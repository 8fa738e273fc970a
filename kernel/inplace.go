package kernel

// guest_memfd in-place conversion with content modes: RFC v5 of Ackerley
// Tng's series, the last posting that has KVM_SET_MEMORY_ATTRIBUTES2's
// ZERO and PRESERVE flags. v6 (2026-05-07) "Dropped everything to do with
// content modes (ZERO/PRESERVE)" after PUCK on 2026-05-06 ("guest_memfd
// was taking on too much complexity to try to paper over differences in
// how trusted firmware handle conversions"); v7 and v8 have none either,
// so gmem-inplace-v8 takes flags 0 only.
//
// The series touches guest_memfd and kvm_main.c, not the TDX MMU, so the
// profile is a guest_memfd series (On): alone it stands on 7.0 (RFC v5's
// base is kvm/next of April 2026, which has 7.0's TDX code), and
// "hugepage-v3+dpamt-v4+gmem-inplace-rfc-v5" (any BASE+gmem-inplace-rfc-v5)
// puts it under another profile's MMU: Sean's rule that S-EPT huge pages
// need guest_memfd attributes is exactly that combination.

import "slices"

const (
	// "[PATCH RFC v5 00/53] guest_memfd: In-place conversion support"
	// (Ackerley Tng, 2026-04-28).
	refInPlaceV5 = "20260428-gmem-inplace-conversion-v5-0-d8608ccfca22@google.com"
	// "[PATCH RFC v5 20/53] KVM: guest_memfd: Enable INIT_SHARED on
	// guest_memfd for x86 Coco VMs": INIT_SHARED only with
	// !vm_memory_attributes. The kvm.ko parameter itself (bool
	// vm_memory_attributes = true; module_param(vm_memory_attributes,
	// bool, 0444)) is in the kvm_main.c context of patch 24 ("KVM: SEV:
	// Make 'uaddr' parameter optional for KVM_SEV_SNP_LAUNCH_UPDATE").
	refInPlaceV5Param = "20260428-gmem-inplace-conversion-v5-20-d8608ccfca22@google.com"
	// "[PATCH RFC v5 22/53] KVM: guest_memfd: Apply content modes while
	// setting memory attributes": the uapi flags, EINVAL for unknown flags
	// or both, EOPNOTSUPP with error_offset for an unsupported mode.
	refInPlaceV5Modes = "20260428-gmem-inplace-conversion-v5-22-d8608ccfca22@google.com"
	// "[PATCH RFC v5 26/53] KVM: x86: Support SNP and TDX applying content
	// modes": TDX takes ZERO, and PRESERVE to private before
	// pre_fault_allowed (KVM_TDX_FINALIZE_VM).
	refInPlaceV5TDX = "20260428-gmem-inplace-conversion-v5-26-d8608ccfca22@google.com"
	// "[PATCH RFC v5 28/53] KVM: Add CAP to enumerate supported
	// SET_MEMORY_ATTRIBUTES2 flags": KVM_CAP_MEMORY_ATTRIBUTES2_FLAGS 250.
	refInPlaceV5Cap = "20260428-gmem-inplace-conversion-v5-28-d8608ccfca22@google.com"
	// "[PATCH v6 00/43] guest_memfd: In-place conversion support"
	// (2026-05-07): content modes dropped.
	refInPlaceV6 = "20260507-gmem-inplace-conversion-v6-0-91ab5a8b19a4@google.com"
	// "[PATCH v8 24/46] KVM: guest_memfd: Make in-place conversion the
	// default" as quoted in Yan Zhao's reply: kvm.ko's
	// gmem_in_place_conversion (bool, 0444), default
	// !CONFIG_KVM_VM_MEMORY_ATTRIBUTES.
	refInPlaceV8Param = "20260618-gmem-inplace-conversion-v8-24-9d2959357853@google.com"
)

var gmemInplaceRFCv5 = Profile{
	Name:    "gmem-inplace-rfc-v5",
	On:      "7.0",
	Base:    "kvm/next (April 2026; base commit not read)",
	Summary: "guest_memfd in-place conversion RFC v5, the last posting with content modes: KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd takes ZERO or PRESERVE, KVM_CAP_MEMORY_ATTRIBUTES2_FLAGS reports them, kvm.vm_memory_attributes=N makes guest_memfd attributes exclusive",
	Series: []Series{
		{Name: "guest_memfd: In-place conversion support", Version: "RFC v5", Date: "2026-04-28", Ref: refInPlaceV5, Note: "53 patches; content modes dropped in v6 (" + refInPlaceV6 + ")"},
	},
	Conversion:          "in_place",
	ExclusiveAttributes: true,
	ExclusiveParam:      "kvm.vm_memory_attributes=N",
	ContentModes:        []string{"zero", "preserve"},
	Policies: []Policy{
		{Key: "pin_private_pages", Value: "false", Source: refTDX619},
	},
	Behaviours: []Behaviour{
		{
			Flag:        "set_memory_attributes2=content_modes",
			Implemented: true,
			Verified:    true,
			Source:      refInPlaceV5Modes,
			Note:        "flags ZERO (1<<0) and PRESERVE (1<<1), 0 is MODE_UNSPECIFIED; any other bit or both: EINVAL before the range is looked at; a mode the VM does not support for the direction: EOPNOTSUPP with error_offset = offset, nothing converted; ZERO to private is never supported; the mode applies to the whole range, already-converted pages too, and only to allocated folios",
		},
		{
			Flag:        "content_modes_tdx=zero,preserve_to_private_before_finalize",
			Implemented: true,
			Verified:    true,
			Source:      refInPlaceV5TDX,
			Note:        "kvm_arch_gmem_supported_content_modes(): TDX always ZERO (zeroed by guest_memfd, since a page never mapped in the S-EPT is not zeroed by the module), PRESERVE only to_private && !kvm->arch.pre_fault_allowed, i.e. before KVM_TDX_FINALIZE_VM; DEFAULT does nothing for TDX",
		},
		{
			Flag:        "cap_memory_attributes2_flags=250",
			Implemented: true,
			Verified:    true,
			Source:      refInPlaceV5Cap,
			Note:        "KVM_CHECK_EXTENSION(KVM_CAP_MEMORY_ATTRIBUTES2_FLAGS): 0 while vm_memory_attributes is on; else for_cap, so TDX reports ZERO|PRESERVE even after finalize; /dev/kvm (no VM) reports ZERO|PRESERVE",
		},
		{
			Flag:        "vm_memory_attributes=N",
			Implemented: true,
			Verified:    true,
			Source:      refInPlaceV5Param,
			Note:        "kvm.ko bool vm_memory_attributes (0444, default Y): N is what lets guest_memfd track private/shared (and take INIT_SHARED for a TD); the profile stands for N, so tds[].conversion: kvm is exit 2",
		},
		{
			Flag:        "init_mem_region_source=optional",
			Implemented: true,
			Verified:    true,
			Source:      refInPlaceV5,
			Note:        "patch 25 'KVM: TDX: Make source page optional for KVM_TDX_INIT_MEM_REGION': source_addr 0 makes tdx_gmem_post_populate() use the destination page as TDH.MEM.PAGE.ADD's source. An in_place TD's image is loaded the way patch 26 describes: range shared, image written into the guest_memfd mapping, PRESERVE to private, KVM_TDX_INIT_MEM_REGION with no source. That the TDX module accepts source == destination was not read from the module",
		},
	},
	Sources: []Source{
		{Ref: refInPlaceV5, What: "RFC v5 cover letter and patch list (53 patches, Ackerley Tng)", Verified: true},
		{Ref: refInPlaceV5Param, What: "RFC v5 patch 20: INIT_SHARED only with !vm_memory_attributes; patch 24's kvm_main.c context: module_param(vm_memory_attributes, bool, 0444), default true", Verified: true},
		{Ref: refInPlaceV5Modes, What: "RFC v5 patch 22: KVM_SET_MEMORY_ATTRIBUTES2_ZERO/PRESERVE, their checks and errnos, api.rst text", Verified: true},
		{Ref: refInPlaceV5TDX, What: "RFC v5 patch 26: the TDX and SNP content modes", Verified: true},
		{Ref: refInPlaceV5Cap, What: "RFC v5 patch 28: KVM_CAP_MEMORY_ATTRIBUTES2_FLAGS (250), 0 with vm_memory_attributes", Verified: true},
		{Ref: refInPlaceV6, What: "v6 cover letter: 'Dropped everything to do with content modes (ZERO/PRESERVE)'", Verified: true},
		srcTDX619,
	},
}

// lookupRaw returns the registry entry called name, unresolved.
func lookupRaw(name string) (Profile, bool) {
	for _, p := range registry {
		if p.Name == name {
			return p, true
		}
	}
	return Profile{}, false
}

// resolve puts a guest_memfd series named alone on its On profile.
func resolve(p Profile) Profile {
	if p.On == "" {
		return p
	}
	base, ok := lookupRaw(p.On)
	if !ok {
		return p
	}
	c := Combine(base, p)
	c.Name, c.Base, c.Summary = p.Name, p.Base, p.Summary+" (alone: on "+base.Name+"'s TDX code)"
	return c
}

// Combine stacks the guest_memfd series ov on the profile base: the
// base's series, policies (ov's replace a key both set), MMU behaviours
// and PAMT settings, then ov's series, behaviours, sources and conversion
// settings. The result is named "BASE+OV" and is never merged.
func Combine(base, ov Profile) Profile {
	c := base
	c.Name = base.Name + "+" + ov.Name
	c.Summary = base.Summary + "; plus " + ov.Summary
	c.Merged = false
	c.On = ""
	c.Series = append(append([]Series(nil), base.Series...), ov.Series...)
	c.Policies = nil
	for _, pol := range base.Policies {
		if !ov.setsPolicy(pol.Key) {
			c.Policies = append(c.Policies, pol)
		}
	}
	c.Policies = append(c.Policies, ov.Policies...)
	c.Behaviours = append(append([]Behaviour(nil), base.Behaviours...), ov.Behaviours...)
	c.Sources = append([]Source(nil), base.Sources...)
	for _, s := range ov.Sources {
		if !c.hasSource(s.Ref) {
			c.Sources = append(c.Sources, s)
		}
	}
	c.Conversion, c.ExclusiveAttributes, c.ExclusiveParam = ov.Conversion, ov.ExclusiveAttributes, ov.ExclusiveParam
	c.ContentModes = append([]string(nil), ov.ContentModes...)
	return c
}

func (p Profile) setsPolicy(key string) bool {
	return slices.ContainsFunc(p.Policies, func(pol Policy) bool { return pol.Key == key })
}

func (p Profile) hasSource(ref string) bool {
	return slices.ContainsFunc(p.Sources, func(s Source) bool { return s.Ref == ref })
}

// HasContentMode reports whether the profile's KVM_SET_MEMORY_ATTRIBUTES2
// takes the content mode ("zero", "preserve").
func (p Profile) HasContentMode(mode string) bool {
	for _, m := range p.ContentModes {
		if m == mode {
			return true
		}
	}
	return false
}

// baseNames are the profiles a guest_memfd series stacks on; overlayNames
// the guest_memfd series.
func baseNames() []string    { return namesWhere(func(p Profile) bool { return p.On == "" }) }
func overlayNames() []string { return namesWhere(func(p Profile) bool { return p.On != "" }) }

func namesWhere(keep func(Profile) bool) []string {
	var out []string
	for _, p := range registry {
		if keep(p) {
			out = append(out, p.Name)
		}
	}
	return out
}
