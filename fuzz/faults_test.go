package fuzz

import (
	"testing"

	"github.com/tdxsim/tdxsim/inject"
)

// Every leaf of moduleFailures is a SEAMCALL leaf, and a campaign with
// --faults all draws every kind of fault (each module failure, each
// allocation source) within a few hundred seeds, each in a scenario the
// loader accepts.
func TestAllFaultsDrawsEveryKind(t *testing.T) {
	for _, mf := range moduleFailures {
		if _, err := inject.ParseLeaf(mf.leaf); err != nil {
			t.Errorf("moduleFailures: %v", err)
		}
	}
	seen := map[string]bool{}
	for seed := uint64(1); seed <= 300; seed++ {
		f, err := Generate(seed, Options{Faults: FaultsAll})
		if err != nil {
			t.Fatal(err)
		}
		for _, lf := range f.Scenario.Inject.Fail {
			seen["fail "+lf.Leaf] = true
		}
		for _, af := range f.Scenario.Inject.AllocFail {
			seen["alloc "+af.Source] = true
		}
	}
	for _, mf := range moduleFailures {
		if !seen["fail "+mf.leaf] {
			t.Errorf("no scenario fails %s", mf.leaf)
		}
	}
	for _, src := range inject.AllocSources {
		if !seen["alloc "+src] {
			t.Errorf("no scenario fails an allocation from %s", src)
		}
	}
	if err := CheckFaults("bogus"); err == nil {
		t.Error("CheckFaults accepted an unknown set")
	}
}
