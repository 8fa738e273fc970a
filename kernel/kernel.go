// Package kernel names the kernel trees and patch series tdxsim can stand
// for. A Profile is data: the release it starts from, the series applied on
// top, the scenario policy values those imply, and the behaviours the model
// does not implement yet, each tied to the tree, tag, commit or lore
// Message-ID it comes from. Nothing here changes a run; the runner reads a
// profile's Policies to set its defaults.
//
// A fact that could not be checked against a tree or a list posting is
// marked Verified: false with a note that says what is missing, so no
// profile claims more than its sources show.
package kernel

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Series is one patch series (or merged tag) a profile applies.
type Series struct {
	Name    string `json:"name"`    // the cover letter's subject, or the tag's name
	Version string `json:"version"` // "v3", "RFC v5", or the tag
	Date    string `json:"date"`    // posting date (UTC, YYYY-MM-DD); for a tag the day it was applied
	Ref     string `json:"ref"`     // lore Message-ID of the cover letter, or tree:tag / commit
	Merged  bool   `json:"merged"`  // in a mainline release
	Note    string `json:"note,omitempty"`
}

// Source is one place a profile's facts were read from.
type Source struct {
	Ref      string `json:"ref"`  // Message-ID, tree:tag, or commit
	What     string `json:"what"` // what this source shows
	Verified bool   `json:"verified"`
	Note     string `json:"note,omitempty"` // for an unverified source: what could not be checked
}

// Policy is one scenario policy value a profile implies, as the key=value
// pair (*scenario.File).SetPolicy accepts.
type Policy struct {
	Key    string
	Value  string
	Source string // the Ref of the Source that shows it
	// Fixed says the tree has no other value: a scenario or --policy
	// that sets the key to something else is bad input (exit 2).
	Fixed bool
}

// Default is the profile a scenario without `kernel:` (and a run without
// --kernel) stands for: the huge-page v3 series on Dynamic PAMT v4, whose
// policy values were the model's defaults before profiles could be chosen.
const Default = "hugepage-v3+dpamt-v4"

// String returns "key=value".
func (p Policy) String() string { return p.Key + "=" + p.Value }

// Behaviour is a named behaviour of a profile that no policy selects: a
// flag such as "memtype_zap=none". Implemented says whether
// the model does it today; a profile with unimplemented behaviours runs as
// the closest thing the model has, and says so.
type Behaviour struct {
	Flag        string
	Implemented bool
	Verified    bool   // the behaviour was read from Source, not inferred
	Source      string // the Ref of the Source that shows it
	Note        string
}

// Profile is one kernel the model can be told to be.
type Profile struct {
	Name       string
	Base       string // the release or tree the series apply to
	Summary    string // one line: what this profile is
	Merged     bool   // every series is in a mainline release
	Series     []Series
	Policies   []Policy
	Behaviours []Behaviour
	Sources    []Source
	// Conversion is the default of tds[].conversion ("" keeps kvm).
	Conversion string
	// ExclusiveAttributes: guest_memfd attributes exclude per-VM ones (the
	// in-place series' module parameter), so conversion: kvm is bad input.
	ExclusiveAttributes bool
	// ExclusiveParam is that module parameter as the admin sets it
	// ("kvm.vm_memory_attributes=N"), for error messages and docs.
	ExclusiveParam string
	// On, for a guest_memfd series (which touches guest_memfd and not the
	// TDX MMU), is the profile it applies to when named alone. Such a
	// profile also stacks on any other as "BASE+NAME" (Lookup, Combine):
	// the base's policies and MMU behaviours, the series' conversion.
	On string
	// Refcounts is how the kernel sizes its Dynamic PAMT refcounts
	// (RefcountArrayBytes); RefcountNone under Dynamic PAMT means the
	// default profile's series, v4's sparse array.
	Refcounts RefcountArray
	// PAMTCachePages, when not 0, is the per-vCPU Dynamic PAMT page
	// cache's fill level: topped up before mmu_lock whenever it holds
	// fewer, to exactly this many (tdx_topup_pamt_cache()). 0 keeps the
	// model's cache (refilled to 16 below 8).
	PAMTCachePages int
	// DPAMTMaxPhysBits, when not 0, is the widest host physical address
	// the profile's Dynamic PAMT runs on (DPAMTMaxPhysBits).
	DPAMTMaxPhysBits int
	// PAMTPutUnderLock is how tdx_pamt_put() takes a range's refcount
	// 1 -> 0 in the series' "Optimize" patch, which every Dynamic PAMT
	// profile carries (tdx_pamt_get() increments a nonzero refcount with
	// atomic_inc_not_zero() and allocates the pair and takes pamt_lock
	// only for 0 -> 1). False: atomic_dec_and_test() outside pamt_lock,
	// then a recheck under it; a tdx_pamt_get() in between meets the pair
	// not yet removed, gets TDX_HPA_RANGE_NOT_FREE from PAMT.ADD and sets
	// the refcount to 1 ("[PATCH v4 08/16] x86/virt/tdx: Optimize
	// tdx_alloc/free_page() helpers", 20251121005125.417831-9-
	// rick.p.edgecombe@intel.com; RFC v5 patch 17). True:
	// atomic_dec_and_lock(), 1 -> 0 under pamt_lock ("[PATCH v6 06/11]
	// x86/virt/tdx: Optimize tdx_pamt_get/put()",
	// 20260526023515.288829-7-rick.p.edgecombe@intel.com).
	PAMTPutUnderLock bool
	// ContentModes are the KVM_SET_MEMORY_ATTRIBUTES2 content modes the
	// profile's guest_memfd takes ("zero", "preserve"); nil: flags must
	// be 0 (EINVAL otherwise).
	ContentModes []string
}

// PolicyPairs returns the profile's policies as "key=value" strings.
func (p Profile) PolicyPairs() []string {
	out := make([]string, len(p.Policies))
	for i, pol := range p.Policies {
		out[i] = pol.String()
	}
	return out
}

// Has reports whether the profile lists the behaviour flag.
func (p Profile) Has(flag string) bool {
	return slices.ContainsFunc(p.Behaviours, func(b Behaviour) bool { return b.Flag == flag })
}

// Unimplemented returns the behaviours the model does not do yet.
func (p Profile) Unimplemented() []Behaviour {
	var out []Behaviour
	for _, b := range p.Behaviours {
		if !b.Implemented {
			out = append(out, b)
		}
	}
	return out
}

// ErrUnknown is wrapped by Lookup for a name no profile has.
var ErrUnknown = errors.New("unknown kernel profile")

// All returns every profile, oldest tree first, then the series in the
// order they were posted; a guest_memfd series stands on its On profile.
// The slice is a copy.
func All() []Profile {
	out := make([]Profile, len(registry))
	for i, p := range registry {
		out[i] = resolve(p)
	}
	return out
}

// Names returns the profile names in All's order.
func Names() []string {
	out := make([]string, len(registry))
	for i, p := range registry {
		out[i] = p.Name
	}
	return out
}

// Lookup returns the profile called name: a registry entry (a guest_memfd
// series named alone stands on its On profile), or "BASE+SERIES", a
// guest_memfd series stacked on another profile (Combine).
func Lookup(name string) (Profile, error) {
	if p, ok := lookupRaw(name); ok {
		return resolve(p), nil
	}
	for _, ov := range registry {
		if ov.On == "" || !strings.HasSuffix(name, "+"+ov.Name) {
			continue
		}
		base, ok := lookupRaw(strings.TrimSuffix(name, "+"+ov.Name))
		if !ok {
			break
		}
		if base.On != "" {
			return Profile{}, fmt.Errorf("%w %q: %s and %s are both guest_memfd series; stack one on a TDX profile (%s)", ErrUnknown, name, base.Name, ov.Name, strings.Join(baseNames(), ", "))
		}
		return Combine(base, ov), nil
	}
	return Profile{}, fmt.Errorf("%w %q; known: %s (a guest_memfd series also stacks on another profile as BASE+%s)", ErrUnknown, name, strings.Join(Names(), ", "), strings.Join(overlayNames(), " or BASE+"))
}

// SourceVerified reports whether ref was checked: a Source with that Ref
// is Verified, or ref is one of the profile's series (a posting or tag that
// was read).
func (p Profile) SourceVerified(ref string) bool {
	for _, s := range p.Sources {
		if s.Ref == ref {
			return s.Verified
		}
	}
	return slices.ContainsFunc(p.Series, func(s Series) bool { return s.Ref == ref })
}
