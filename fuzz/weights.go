package fuzz

import (
	"github.com/tdxsim/tdxsim/scenario"
)

// kindWeight is one step kind's share of the generated timeline: weight
// out of the table's sum, made by make (nil from make: the kind does not
// apply to this TD now, and the pick is skipped). A kind of weight 0 says
// in why where it comes from instead.
type kindWeight struct {
	kind   string
	weight int
	make   func(g *gen, s *scenario.Scenario, td *scenario.TD) []scenario.Step
	why    string
}

// stepWeights is the generator's mix: one entry per step kind of the
// scenario registry (scenario.StepKinds; a test keeps the two in step),
// after the op weights of pebble's metamorphic/config.go. Guest workloads
// dominate; every host event, hostile guests, idle time, a memslot
// deletion and a teardown in the middle of the timeline come up in most
// campaigns of a few dozen runs.
var stepWeights = []kindWeight{
	{kind: "boot", why: "every TD boots once, first (as pebble's dbClose is generated once, at the end)"},
	{kind: "touch", weight: 8, make: guestOp((*gen).touch)},
	{kind: "convert", weight: 8, make: guestOp((*gen).convert)},
	{kind: "accept", weight: 1, make: guestOp((*gen).acceptRange)},
	{kind: "bounce", weight: 1, make: guestOp((*gen).bounce)},
	{kind: "balloon", weight: 2, make: guestOp((*gen).balloon)},
	{kind: "hostile", weight: 2, make: guestOp((*gen).hostileGuest)},
	{kind: "idle", weight: 1, make: (*gen).idle},
	{kind: "punch_hole", weight: 2, make: hostOp((*gen).punchHole)},
	{kind: "memslot_delete", weight: 1, make: (*gen).memslotDelete},
	{kind: "memory_type_change", weight: 3, make: hostOp((*gen).memoryTypeChange)},
	{kind: "mmu_notifier", weight: 3, make: hostOp((*gen).mmuNotifier)},
	{kind: "memory_failure", weight: 1, make: (*gen).memoryFailure},
	{kind: "teardown", weight: 1, make: (*gen).teardown},
	{kind: "parallel", weight: 6, make: (*gen).parallel},
}

// genConfig is the rest of the generator's shape: how often a scenario
// gets a second TD, each conversion mode, fault injection.
var genConfig = struct {
	twoTDs, inPlace, keepShared, inject, allFaults, twoSlots, image float64
	// hostileGuests is the hostile share of guest workloads under
	// --hostile (a third, as before the table).
	hostileGuests float64
}{twoTDs: 0.25, inPlace: 0.35, keepShared: 0.2, inject: 0.15, allFaults: 0.5, twoSlots: 0.3, image: 0.5, hostileGuests: 1.0 / 3}

func guestOp(f func(g *gen, td *scenario.TD) scenario.Op) func(*gen, *scenario.Scenario, *scenario.TD) []scenario.Step {
	return func(g *gen, _ *scenario.Scenario, td *scenario.TD) []scenario.Step {
		op := f(g, td)
		if op == nil {
			return nil // the kind does not apply to this TD now
		}
		return []scenario.Step{{Op: op}}
	}
}

func hostOp(f func(g *gen, td *scenario.TD, gpa, size scenario.Size, inParallel bool) scenario.Op) func(*gen, *scenario.Scenario, *scenario.TD) []scenario.Step {
	return func(g *gen, _ *scenario.Scenario, td *scenario.TD) []scenario.Step {
		gpa, size := g.hostRange(td)
		return []scenario.Step{{Op: f(g, td, gpa, size, false)}}
	}
}

// weightsFor is the table's weights for one campaign: --hostile raises
// hostile guests to genConfig.hostileGuests of the guest workloads.
func weightsFor(o Options) []int {
	ws := make([]int, len(stepWeights))
	guestSum := 0
	for i, k := range stepWeights {
		ws[i] = k.weight
		if k.kind == "touch" || k.kind == "convert" || k.kind == "balloon" {
			guestSum += k.weight
		}
	}
	if o.Hostile {
		for i, k := range stepWeights {
			if k.kind == "hostile" {
				// h/(h+guestSum) = share
				ws[i] = int(float64(guestSum)*genConfig.hostileGuests/(1-genConfig.hostileGuests) + 0.5)
			}
		}
	}
	return ws
}

// hostKinds are the host events a parallel group races with a guest
// workload, by weight (a punch is not beside other steps: see punchHole).
var hostKinds = []struct {
	weight int
	make   func(g *gen, td *scenario.TD, gpa, size scenario.Size, inParallel bool) scenario.Op
}{
	{3, (*gen).mmuNotifier},
	{3, (*gen).memoryTypeChange},
	{1, (*gen).punchHole},
}

// guestKinds are the guest workloads a parallel group runs, by weight.
var guestKinds = []struct {
	weight int
	make   func(g *gen, td *scenario.TD) scenario.Op
}{
	{4, (*gen).touch},
	{4, (*gen).convert},
	{1, (*gen).balloon},
	{1, (*gen).hostileGuest},
}
