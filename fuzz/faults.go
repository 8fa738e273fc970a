package fuzz

import (
	"fmt"

	"github.com/tdxsim/tdxsim/inject"
	"github.com/tdxsim/tdxsim/scenario"
)

// The fault sets a campaign's generator draws injected faults from
// (fuzz --faults).
const (
	// FaultsMenu: a few scenarios in seven (genConfig.inject) get one to
	// three entries of injectMenu, the faults KVM retries or answers
	// with an errno; none when --inject sets the campaign's faults.
	FaultsMenu = "menu"
	// FaultsAll: half the scenarios (genConfig.allFaults) get one to
	// three faults of every kind KVM has an answer for: a module
	// failure of each SEAMCALL in moduleFailures, an allocation failure
	// from each cache and pool, besides injectMenu's; on top of --inject
	// (so --inject busy=0.05 --faults all is BUSY on every leaf plus
	// every fail and alloc kind).
	FaultsAll = "all"
	// FaultsNone: no generated faults (--inject alone).
	FaultsNone = "none"
)

// FaultSets lists the fault sets, for --faults.
var FaultSets = []string{FaultsMenu, FaultsAll, FaultsNone}

// CheckFaults rejects an unknown fault set.
func CheckFaults(set string) error {
	for _, s := range FaultSets {
		if set == s {
			return nil
		}
	}
	return fmt.Errorf("%q: want one of %v", set, FaultSets)
}

// injectMenu is the fault injection a scenario may get (a few entries of
// it): TDX_OPERAND_BUSY on the fault path's AUG and SEPT.ADD (KVM retries
// the fault) and now and then on the zap path's BLOCK, TRACK and REMOVE
// (tdh_do_no_vcpus() kicks the vCPUs and retries), a failed page-table
// top-up (-ENOMEM to the faulting path).
var injectMenu = []func(g *gen, in *scenario.Inject){
	func(g *gen, in *scenario.Inject) {
		in.Busy = []float64{0.02, 0.05, 0.1}[g.r.IntN(3)]
		in.BusyLeaves = []string{"TDH.MEM.PAGE.AUG", "TDH.MEM.SEPT.ADD"}
	},
	func(g *gen, in *scenario.Inject) {
		in.Fail = append(in.Fail, scenario.LeafFailure{Leaf: "TDH.MEM.RANGE.BLOCK", Nth: uint64(1 + g.r.IntN(8)), Every: uint64(3 + g.r.IntN(8)), Status: "TDX_OPERAND_BUSY"})
	},
	func(g *gen, in *scenario.Inject) {
		in.Fail = append(in.Fail, scenario.LeafFailure{Leaf: "TDH.MEM.TRACK", Nth: uint64(1 + g.r.IntN(4)), Every: uint64(3 + g.r.IntN(6)), Status: "TDX_OPERAND_BUSY"})
	},
	func(g *gen, in *scenario.Inject) {
		in.Fail = append(in.Fail, scenario.LeafFailure{Leaf: "TDH.MEM.PAGE.REMOVE", Nth: uint64(1 + g.r.IntN(8)), Every: uint64(5 + g.r.IntN(8)), Status: "TDX_OPERAND_BUSY"})
	},
	func(g *gen, in *scenario.Inject) {
		in.AllocFail = append(in.AllocFail, scenario.AllocFailure{Source: "kvm.mmu_shadow_page_cache", Nth: uint64(20 + g.r.IntN(300))})
	},
}

// moduleFailures are the SEAMCALLs whose failure (the default status,
// TDX_OPERAND_INVALID: a module bug or a corrupted operand) KVM has an
// answer for, each with about how many calls a small generated scenario
// makes of it, so that the failing call falls inside the run: the TD
// build (MNG.CREATE, PAGE.ADD, MR.EXTEND; the build fails with EIO), the
// fault path (AUG, SEPT.ADD, PAMT.ADD; the fault fails or is
// KVM_BUG_ON), the zap path (BLOCK, TRACK, REMOVE, DEMOTE; KVM_BUG_ON)
// and teardown (RECLAIM; the page is leaked on purpose).
var moduleFailures = []struct {
	leaf  string
	calls int
}{
	{"TDH.MNG.CREATE", 1},
	{"TDH.MEM.PAGE.ADD", 16},
	{"TDH.MR.EXTEND", 256},
	{"TDH.MEM.PAGE.AUG", 200},
	{"TDH.MEM.SEPT.ADD", 20},
	{"TDH.PHYMEM.PAMT.ADD", 30},
	{"TDH.MEM.RANGE.BLOCK", 50},
	{"TDH.MEM.TRACK", 20},
	{"TDH.MEM.PAGE.REMOVE", 50},
	{"TDH.MEM.PAGE.DEMOTE", 4},
	{"TDH.PHYMEM.PAGE.RECLAIM", 20},
}

// allFaults is FaultsAll's menu: injectMenu, then one entry per module
// failure, then one per allocation source.
func allFaults() []func(g *gen, in *scenario.Inject) {
	menu := append([]func(g *gen, in *scenario.Inject){}, injectMenu...)
	for _, mf := range moduleFailures {
		menu = append(menu, func(g *gen, in *scenario.Inject) {
			in.Fail = append(in.Fail, scenario.LeafFailure{Leaf: mf.leaf, Nth: uint64(1 + g.r.IntN(mf.calls))})
		})
	}
	for _, src := range inject.AllocSources {
		menu = append(menu, func(g *gen, in *scenario.Inject) {
			in.AllocFail = append(in.AllocFail, scenario.AllocFailure{Source: src, Nth: uint64(1 + g.r.IntN(300))})
		})
	}
	return menu
}

// faults draws the scenario's injected faults from the campaign's set.
func (g *gen) faults() scenario.Inject {
	switch {
	case g.faultSet == FaultsAll && g.chance(genConfig.allFaults):
		return g.draw(allFaults())
	case (g.faultSet == "" || g.faultSet == FaultsMenu) && !g.injectSet && g.chance(genConfig.inject):
		return g.draw(injectMenu)
	}
	return scenario.Inject{}
}

// draw applies one to three distinct entries of menu.
func (g *gen) draw(menu []func(g *gen, in *scenario.Inject)) scenario.Inject {
	var in scenario.Inject
	for _, k := range g.r.Perm(len(menu))[:1+g.r.IntN(3)] {
		menu[k](g, &in)
	}
	return in
}
