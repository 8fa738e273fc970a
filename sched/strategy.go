package sched

import (
	"math/rand/v2"

	"github.com/tdxsim/tdxsim/event"
)

// Strategy chooses, at every scheduling decision of the deterministic
// scheduler, which runnable thread runs next. It is called only by the
// thread holding the CPU, so it needs no locking; it must depend only on
// its own state and its arguments, so that a strategy built the same way
// picks the same interleaving.
type Strategy interface {
	// Pick returns the index in ready of the thread to run. from is the
	// thread that held the CPU (nil at the start of the run); running
	// reports whether it could go on (it yielded, rather than blocked or
	// exited), and then it is among ready. ready lists the runnable
	// threads in id order and is never empty; Pick must not keep it.
	Pick(from *Thread, running bool, ready []*Thread) int
}

// Random picks uniformly among the runnable threads with a PCG seeded by
// the seed: the scheduler's default.
func Random(seed uint64) Strategy {
	return &random{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

type random struct{ rng *rand.Rand }

func (r *random) Pick(_ *Thread, _ bool, ready []*Thread) int {
	if len(ready) == 1 {
		return 0
	}
	return r.rng.IntN(len(ready))
}

// NewWith returns a deterministic scheduler whose decisions strat makes.
func NewWith(strat Strategy, sink event.Sink) *Scheduler {
	s := New(Deterministic, 0, sink)
	s.eng.(*deterministic).strat = strat
	return s
}

// Decisions returns how many scheduling decisions the deterministic
// scheduler made (0 for a parallel run).
func (s *Scheduler) Decisions() uint64 {
	if d, ok := s.eng.(*deterministic); ok {
		return d.ndecide
	}
	return 0
}
