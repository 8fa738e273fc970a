package kernel_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/kernel"
)

// A guest_memfd series named alone stands on 7.0: 7.0's fixed 4 KiB and
// static-PAMT policies, its teardown, plus the series' conversion
// settings. Series: "[PATCH RFC v5 00/53] guest_memfd: In-place
// conversion support" (20260428-gmem-inplace-conversion-v5-0-d8608ccfca22@google.com).
func TestInplaceAloneStandsOn70(t *testing.T) {
	p, err := kernel.Lookup("gmem-inplace-rfc-v5")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(p.PolicyPairs(), " ")
	for _, want := range []string{"hugepages=off", "dynamic_pamt=false", "teardown=per_page", "pin_private_pages=false"} {
		if !strings.Contains(got, want) {
			t.Errorf("policies %q lack %s", got, want)
		}
	}
	if p.Merged || p.Conversion != "in_place" || !p.ExclusiveAttributes || p.ExclusiveParam != "kvm.vm_memory_attributes=N" {
		t.Errorf("merged %v, conversion %q, exclusive %v %q", p.Merged, p.Conversion, p.ExclusiveAttributes, p.ExclusiveParam)
	}
	if !p.HasContentMode("zero") || !p.HasContentMode("preserve") || !p.Has("memtype_zap=none") {
		t.Errorf("content modes %v, behaviours %+v", p.ContentModes, p.Behaviours)
	}
	if len(p.Series) != 3 || p.Series[2].Version != "RFC v5" {
		t.Errorf("series %+v: want 7.0's two, then RFC v5", p.Series)
	}
	v8, _ := kernel.Lookup("gmem-inplace-v8")
	if len(v8.ContentModes) != 0 || v8.ExclusiveParam != "kvm.gmem_in_place_conversion=Y" {
		t.Errorf("v8: content modes %v (dropped in v6), param %q", v8.ContentModes, v8.ExclusiveParam)
	}
}

// BASE+SERIES stacks a guest_memfd series on every TDX profile: the
// base's policies, PAMT settings and series, then the series' own; the
// combination's policies are all valid together.
func TestInplaceStacks(t *testing.T) {
	p, err := kernel.Lookup("hugepage-v3+dpamt-v4+gmem-inplace-rfc-v5")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(p.PolicyPairs(), " ")
	if !strings.Contains(got, "hugepages=2M") || !strings.Contains(got, "dynamic_pamt=true") || strings.Count(got, "pin_private_pages=") != 1 {
		t.Errorf("policies %q", got)
	}
	if p.Refcounts != kernel.RefcountSparse || p.Conversion != "in_place" || !p.HasContentMode("zero") || p.Merged {
		t.Errorf("refcounts %v, conversion %q, modes %v, merged %v", p.Refcounts, p.Conversion, p.ContentModes, p.Merged)
	}
	if n := len(p.Series); n != 3 || p.Series[n-1].Version != "RFC v5" {
		t.Errorf("series %+v", p.Series)
	}
	for _, base := range kernel.Names() {
		for _, ov := range []string{"gmem-inplace-rfc-v5", "gmem-inplace-v8"} {
			name := base + "+" + ov
			p, err := kernel.Lookup(name)
			if base == "gmem-inplace-rfc-v5" || base == "gmem-inplace-v8" {
				if !errors.Is(err, kernel.ErrUnknown) || !strings.Contains(err.Error(), "both guest_memfd series") {
					t.Errorf("%s: %v, want two guest_memfd series refused", name, err)
				}
				continue
			}
			if err != nil || p.Name != name {
				t.Errorf("%s: %q, %v", name, p.Name, err)
				continue
			}
			f := parseMinimal(t)
			for _, pol := range p.Policies {
				if err := f.SetPolicy(pol.Key, pol.Value); err != nil {
					t.Errorf("%s: %s: %v", name, pol, err)
				}
			}
			refs := map[string]bool{}
			for _, s := range p.Sources {
				if refs[s.Ref] {
					t.Errorf("%s: source %s twice", name, s.Ref)
				}
				refs[s.Ref] = true
			}
		}
	}
	if _, err := kernel.Lookup("6.20+gmem-inplace-rfc-v5"); !errors.Is(err, kernel.ErrUnknown) {
		t.Errorf("unknown base: %v", err)
	}
}
