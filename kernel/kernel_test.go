package kernel_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/kernel"
	"github.com/tdxsim/tdxsim/scenario"
)

// minimal is the smallest scenario Parse accepts: the policies a profile
// implies are applied to it as --policy overrides would be.
const minimal = "tds: [{memory: 256M}]\n"

func parseMinimal(t *testing.T) *scenario.File {
	t.Helper()
	f, err := scenario.Parse("minimal.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The profiles the task names, in All's order.
var wantNames = []string{"6.19", "7.0", "hugepage-v3+dpamt-v4", "rfc-v5", "gmem-inplace-rfc-v5", "dpamt-v6", "gmem-inplace-v8"}

func TestRegistry(t *testing.T) {
	all := kernel.All()
	if got := kernel.Names(); strings.Join(got, " ") != strings.Join(wantNames, " ") {
		t.Fatalf("names %q, want %q", got, wantNames)
	}
	seen := map[string]bool{}
	for _, p := range all {
		t.Run(p.Name, func(t *testing.T) {
			if seen[p.Name] {
				t.Fatalf("name %q twice", p.Name)
			}
			seen[p.Name] = true
			if p.Base == "" || p.Summary == "" {
				t.Errorf("base %q, summary %q: both required", p.Base, p.Summary)
			}
			if len(p.Sources) == 0 {
				t.Error("no sources")
			}
			if len(p.Series) == 0 {
				t.Error("no series")
			}
			refs := map[string]bool{}
			for _, s := range p.Sources {
				if s.Ref == "" || s.What == "" {
					t.Errorf("source %+v: ref and what required", s)
				}
				if !s.Verified && s.Note == "" {
					t.Errorf("unverified source %s says not what is missing", s.Ref)
				}
				refs[s.Ref] = true
			}
			merged := true
			for _, s := range p.Series {
				refs[s.Ref] = true
				if s.Name == "" || s.Version == "" || s.Ref == "" || len(s.Date) != len("2006-01-02") {
					t.Errorf("series %+v: name, version, ref and a YYYY-MM-DD date required", s)
				}
				merged = merged && s.Merged
			}
			if merged != p.Merged {
				t.Errorf("profile merged=%v but its series merged=%v", p.Merged, merged)
			}
			for _, b := range p.Behaviours {
				if !strings.Contains(b.Flag, "=") || b.Source == "" {
					t.Errorf("behaviour %+v: want name=value and a source", b)
				}
				if !b.Verified && b.Note == "" {
					t.Errorf("unverified behaviour %s says not what is missing", b.Flag)
				}
				if !refs[b.Source] {
					t.Errorf("behaviour %s cites %s, which is not among the profile's sources or series", b.Flag, b.Source)
				}
			}
			for _, pol := range p.Policies {
				if !refs[pol.Source] {
					t.Errorf("policy %s cites %s, which is not among the profile's sources or series", pol, pol.Source)
				}
			}
			if len(p.Policies) == 0 && len(p.Behaviours) == 0 {
				t.Error("a profile that differs in nothing")
			}
		})
	}
}

// Every policy pair must be one SetPolicy accepts, alone and together with
// the profile's other pairs (the combination is what a run would get).
func TestPoliciesAccepted(t *testing.T) {
	for _, p := range kernel.All() {
		t.Run(p.Name, func(t *testing.T) {
			together := parseMinimal(t)
			keys := map[string]bool{}
			for _, pol := range p.Policies {
				if keys[pol.Key] {
					t.Errorf("%s set twice", pol.Key)
				}
				keys[pol.Key] = true
				if pol.Source == "" {
					t.Errorf("%s: no source", pol)
				}
				if err := parseMinimal(t).SetPolicy(pol.Key, pol.Value); err != nil {
					t.Errorf("%s alone: %v", pol, err)
				}
				if err := together.SetPolicy(pol.Key, pol.Value); err != nil {
					t.Errorf("%s after %v: %v", pol, p.PolicyPairs(), err)
				}
			}
		})
	}
}

// Merged releases map private memory at 4 KiB and use static PAMT: the
// profiles must not say otherwise.
func TestMergedProfilesAre4KStaticPAMT(t *testing.T) {
	for _, p := range kernel.All() {
		if !p.Merged {
			continue
		}
		got := strings.Join(p.PolicyPairs(), " ")
		for _, want := range []string{"hugepages=off", "dynamic_pamt=false", "pin_private_pages=false"} {
			if !strings.Contains(got, want) {
				t.Errorf("%s: policies %q lack %s", p.Name, got, want)
			}
		}
	}
}

func TestLookup(t *testing.T) {
	p, err := kernel.Lookup("rfc-v5")
	if err != nil || p.Name != "rfc-v5" {
		t.Fatalf("%+v, %v", p.Name, err)
	}
	_, err = kernel.Lookup("6.20")
	if !errors.Is(err, kernel.ErrUnknown) {
		t.Fatalf("err %v does not wrap ErrUnknown", err)
	}
	for _, name := range wantNames {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not list %s", err, name)
		}
	}
}

// All returns a copy: a caller cannot edit the registry.
func TestAllIsACopy(t *testing.T) {
	a := kernel.All()
	a[0].Name = "changed"
	if kernel.All()[0].Name == "changed" {
		t.Fatal("All shares the registry")
	}
}

// docs/kernels.md documents every profile and every behaviour the model
// does not implement yet.
func TestDocsCoverProfiles(t *testing.T) {
	b, err := os.ReadFile("../docs/kernels.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, p := range kernel.All() {
		if !strings.Contains(doc, "## "+p.Name+"\n") {
			t.Errorf("no section for %s", p.Name)
		}
		for _, u := range p.Unimplemented() {
			if !strings.Contains(doc, "`"+u.Flag+"`") {
				t.Errorf("%s: unimplemented %s not documented", p.Name, u.Flag)
			}
		}
		for _, s := range p.Series {
			if !strings.Contains(doc, strings.TrimPrefix(s.Ref, "kvm-x86/linux tag ")) {
				t.Errorf("%s: series ref %s not cited", p.Name, s.Ref)
			}
		}
	}
}
