package scenario

import "github.com/tdxsim/tdxsim/tdxmodule"

// Coverage is what one run exercised, for a fuzz campaign's coverage
// figure: the S-EPT entry transitions the TDX module's leaves made and the
// lock-order edges lockdep recorded.
type Coverage struct {
	Transitions []tdxmodule.Transition // each once, in the order first made
	LockEdges   []string               // "A -> B", as sched.LockDep.Edges
}

// StepKinds returns the step kinds' YAML names, in registry order.
func StepKinds() []string { return append([]string(nil), stepKinds...) }

// fillCoverage writes what the run exercised into o.Coverage (if set).
func (rn *runner) fillCoverage() {
	if rn.o.Coverage == nil {
		return
	}
	*rn.o.Coverage = Coverage{Transitions: rn.host.Mod.TransitionsMade(), LockEdges: rn.s.LockDep().Edges()}
}
