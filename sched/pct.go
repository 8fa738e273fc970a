package sched

import (
	"math/rand/v2"
	"slices"
)

// PCT is probabilistic concurrency testing (Burckhardt, Kothari,
// Musuvathi, Nagarakatte, "A Randomized Scheduler with Probabilistic
// Guarantees of Finding Bugs", ASPLOS 2010): every thread gets a random
// distinct priority, depth-1 change points are drawn uniformly over the
// first steps decisions, and the highest-priority runnable thread always
// runs. At the i-th change point the running thread's priority drops
// below every initial one (to depth-1-i). A bug of depth d among n
// threads and k decisions is found by one run with probability at least
// 1/(n·k^(d-1)).
//
// Threads spawned during the run get their random priority when first
// seen. steps is the estimate of the run's decisions (Decisions of an
// earlier run of the same scenario is a good one); depth at least 1.
func PCT(seed uint64, depth, steps int) Strategy {
	depth = max(depth, 1)
	steps = max(steps, 1)
	p := &pct{rng: rand.New(rand.NewPCG(seed, seed^0x243f6a8885a308d3)), depth: depth}
	for range depth - 1 {
		p.change = append(p.change, 1+p.rng.Uint64N(uint64(steps)))
	}
	slices.Sort(p.change)
	return p
}

type pct struct {
	rng    *rand.Rand
	depth  int
	change []uint64 // decisions at which the running thread is lowered, sorted
	next   int      // change points passed
	n      uint64   // decisions so far
	prio   []uint64 // by thread id; 0: not seen yet
}

func (p *pct) priority(t *Thread) uint64 {
	for int(t.id) >= len(p.prio) {
		p.prio = append(p.prio, 0)
	}
	if p.prio[t.id] == 0 {
		// above every lowered priority (< depth), distinct with
		// overwhelming odds; ties go to the lower id
		p.prio[t.id] = uint64(p.depth) + 1 + p.rng.Uint64N(1<<48)
	}
	return p.prio[t.id]
}

func (p *pct) Pick(from *Thread, _ bool, ready []*Thread) int {
	p.n++
	for p.next < len(p.change) && p.change[p.next] <= p.n {
		if from != nil && p.change[p.next] == p.n {
			p.priority(from)
			p.prio[from.id] = uint64(p.depth - 1 - p.next)
		}
		p.next++
	}
	best, bp := 0, uint64(0)
	for i, t := range ready {
		if pr := p.priority(t); pr > bp {
			best, bp = i, pr
		}
	}
	return best
}
