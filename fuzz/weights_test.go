package fuzz

import (
	"slices"
	"testing"

	"github.com/tdxsim/tdxsim/scenario"
)

// Every step kind of the scenario registry has one entry in the weights
// table, in registry order, and every entry names a registered kind: a
// new kind cannot be forgotten by the generator. An entry of weight 0
// says why.
func TestEveryKindWeighted(t *testing.T) {
	var kinds []string
	for _, k := range stepWeights {
		kinds = append(kinds, k.kind)
		if k.weight == 0 && k.why == "" {
			t.Errorf("%s: weight 0 without a why", k.kind)
		}
		if k.weight > 0 && k.make == nil {
			t.Errorf("%s: weight %d and no maker", k.kind, k.weight)
		}
	}
	if want := scenario.StepKinds(); !slices.Equal(kinds, want) {
		t.Errorf("weights table kinds %v\nregistry kinds       %v", kinds, want)
	}
}

// A few dozen generated scenarios use every step kind, both conversion
// modes, two TDs, fault injection and a teardown before the timeline's
// end; every TD is at most DefaultMaxMemory, and --max-memory raises it.
func TestGeneratorReachesEverything(t *testing.T) {
	kinds := map[string]bool{}
	var inPlace, kvmConv, twoTDs, inject, midTeardown bool
	for seed := uint64(1); seed <= 80; seed++ {
		f, err := Generate(seed, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, td := range f.TDs {
			if uint64(td.Memory) > DefaultMaxMemory {
				t.Errorf("seed %d: %s has %d bytes", seed, td.Name, td.Memory)
			}
			inPlace = inPlace || td.Conversion == "in_place"
			kvmConv = kvmConv || td.Conversion != "in_place"
		}
		twoTDs = twoTDs || len(f.TDs) == 2
		inject = inject || f.Inject.Busy > 0 || len(f.Inject.Fail) > 0 || len(f.Inject.AllocFail) > 0
		for i, st := range f.Timeline {
			kinds[st.Kind()] = true
			for _, m := range st.Members() {
				kinds[m.Kind()] = true
			}
			if st.Kind() == "teardown" && i < len(f.Timeline)-1 {
				midTeardown = true
			}
		}
	}
	for _, k := range scenario.StepKinds() {
		if !kinds[k] {
			t.Errorf("no %s step in 80 seeds", k)
		}
	}
	if !inPlace || !kvmConv || !twoTDs || !inject || !midTeardown {
		t.Errorf("in_place %v, kvm %v, two TDs %v, inject %v, teardown mid-timeline %v", inPlace, kvmConv, twoTDs, inject, midTeardown)
	}
	big := false
	for seed := uint64(1); seed <= 20 && !big; seed++ {
		f, err := Generate(seed, Options{MaxMemory: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		for _, td := range f.TDs {
			big = big || uint64(td.Memory) > DefaultMaxMemory
		}
	}
	if !big {
		t.Error("--max-memory 1G made no TD above the default")
	}
}

// The limits of --max-memory.
func TestCheckMaxMemory(t *testing.T) {
	for n, ok := range map[uint64]bool{8 << 20: true, 1 << 30: true, 3 << 20: false, 4 << 20: false, 2 << 40: false} {
		if err := CheckMaxMemory(n); (err == nil) != ok {
			t.Errorf("%d: %v", n, err)
		}
	}
}
