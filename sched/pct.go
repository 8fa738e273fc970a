package sched

import (
	"math"
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
// A thread that spins (Thread.Spin: a retry loop waiting for another
// thread) drops below every priority so far, as CHESS's fair scheduler
// lowers a yielding thread (Musuvathi and Qadeer, "Fair Stateless Model
// Checking", PLDI 2008): PCT assumes every thread terminates on its own,
// and a higher-priority spinner would otherwise starve the thread it
// waits for forever. Chains of spinners make progress too: each drops
// below the last.
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
	prio   []int64  // by thread id; 0: not seen yet
	floor  int64    // the lowest priority given so far (spinners go below it)
}

func (p *pct) priority(t *Thread) int64 {
	for int(t.id) >= len(p.prio) {
		p.prio = append(p.prio, 0)
	}
	if p.prio[t.id] == 0 {
		// above every lowered priority (< depth), distinct with
		// overwhelming odds; ties go to the lower id
		p.prio[t.id] = int64(p.depth) + 1 + int64(p.rng.Uint64N(1<<48))
	}
	return p.prio[t.id]
}

func (p *pct) Pick(from *Thread, _ bool, ready []*Thread) int {
	p.n++
	for p.next < len(p.change) && p.change[p.next] <= p.n {
		if from != nil && p.change[p.next] == p.n {
			p.priority(from)
			p.prio[from.id] = int64(p.depth - 1 - p.next)
		}
		p.next++
	}
	if from != nil && from.spinning && len(ready) > 1 {
		p.priority(from)
		p.floor--
		p.prio[from.id] = p.floor
	}
	best, bp := 0, int64(math.MinInt64)
	for i, t := range ready {
		if pr := p.priority(t); pr > bp {
			best, bp = i, pr
		}
	}
	return best
}
