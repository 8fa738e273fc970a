// Package explore enumerates the schedules of a small scenario
// systematically: iterative context bounding (Musuvathi and Qadeer, "Iterative
// Context Bounding for Systematic Testing of Multithreaded Programs", PLDI
// 2007). A schedule is the list of threads chosen at the deterministic
// scheduler's decisions with more than one runnable thread; a preemption
// is a choice other than the thread that held the CPU while it could go
// on (it yielded; choosing among threads after the running one blocked
// or exited is free). Every schedule with at most Preemptions
// preemptions is run once, depth first, each run checked by every
// invariant after every step.
//
// Reduction: none on the state. The model's state lives in Go objects
// and the stacks of parked simulated threads, so it cannot be hashed or
// restored at a scheduling point; instead a run that ends with a
// schedule hash already seen is counted once in Distinct. The bounded
// space is therefore explored exactly, and its size grows with the
// number of decisions: keep the scenario small, or cap it with
// MaxSchedules or Duration.
package explore

import (
	"time"

	"github.com/tdxsim/tdxsim/fuzz"
	"github.com/tdxsim/tdxsim/scenario"
	"github.com/tdxsim/tdxsim/sched"
)

// Config bounds an exploration.
type Config struct {
	Preemptions  int           // at most this many preemptions per schedule
	MaxSchedules int           // stop after this many runs (0: no cap)
	Duration     time.Duration // stop after this long (0: no cap)
	// Progress, if set, is called after each run with the result so far.
	Progress func(*Result)
}

// Result is what an exploration saw.
type Result struct {
	Preemptions int `json:"preemptions"`
	// Schedules is the runs made; Distinct the distinct schedule hashes
	// among them (runs whose choices differ only where they led to the
	// same interleaving).
	Schedules int `json:"schedules"`
	Distinct  int `json:"distinct_interleavings"`
	// MaxDecisions is the most scheduling decisions with a choice that one
	// run made.
	MaxDecisions int `json:"max_decisions"`
	// Exhausted is true when every schedule within the bound ran (no cap
	// stopped it and no violation ended it early).
	Exhausted bool `json:"exhausted"`
	// Violation is the first schedule that broke an invariant (nil when
	// none did).
	Violation *Violation `json:"violation"`
	ElapsedMS int64      `json:"elapsed_ms"`
}

// Violation is a failing schedule.
type Violation struct {
	Broken      []string `json:"broken"`
	Picks       []int32  `json:"picks"`       // the schedule, for schedule.picks
	Preemptions int      `json:"preemptions"` // how many of its choices preempt
	Reproducer  string   `json:"reproducer,omitempty"`
}

// decision is one scheduling decision with a choice.
type decision struct {
	ready   []int32 // runnable thread ids, in id order
	from    int32   // the thread that held the CPU (-1 at the start)
	running bool    // it could go on
	chosen  int32
	fair    bool // the default moved on from a spinning thread
	spin    bool // from has yielded more than spinAfter times in a row: it is spinning
}

// recorder follows a prefix of choices, then lets the running thread go
// on (scenario.NonPreemptive), and records every decision with a choice.
type recorder struct {
	prefix []int32
	trace  []decision
	streak int // consecutive default choices that kept the same thread on
}

// fairAfter is how many times in a row the default choice keeps a
// yielding thread on before it moves to the next runnable one: a thread
// spinning on a condition another thread must make true (a lazy-accept
// waiter, a retry loop) would otherwise never let that thread run. Such a
// switch is a fairness switch, not a counted preemption (CHESS's fair
// scheduling does the same at yields).
const fairAfter = 64

// spinAfter is how many yields in a row of one thread (no other thread
// running between them) make it count as spinning for noBranch.
const spinAfter = 8

func (r *recorder) Pick(from *sched.Thread, running bool, ready []*sched.Thread) int {
	if len(ready) == 1 {
		return 0
	}
	j := -1
	if i := len(r.trace); i < len(r.prefix) {
		for k, t := range ready {
			if t.ID() == r.prefix[i] {
				j = k
			}
		}
	}
	fair := false
	if j < 0 {
		j = scenario.NonPreemptive(from, running, ready)
		if running && ready[j] == from {
			r.streak++
			if r.streak > fairAfter {
				j = (j + 1) % len(ready)
				r.streak = 0
				fair = true
			}
		} else {
			r.streak = 0
		}
	}
	d := decision{ready: make([]int32, len(ready)), from: -1, running: running, chosen: ready[j].ID(), fair: fair, spin: r.streak > spinAfter}
	for k, t := range ready {
		d.ready[k] = t.ID()
	}
	if from != nil {
		d.from = from.ID()
	}
	r.trace = append(r.trace, d)
	return j
}

// noBranch: no schedule branches at a fairness switch or once a thread
// has yielded more than spinAfter times in a row (a retry loop that
// looks again at a condition another thread must change): its
// iterations leave the state as it was, so preempting it at iteration n
// reaches what preempting it earlier reaches, and branching at every
// iteration would make the bounded space infinite. This is the one
// reduction explore makes, and it is a heuristic: a thread doing more
// than spinAfter yields of real work in a row is not preempted after
// the spinAfter-th.

// preempts reports whether choosing id at d is a preemption.
func (d decision) preempts(id int32) bool { return d.running && id != d.from && !d.fair }

// pending is a schedule prefix still to run.
type pending struct {
	prefix      []int32
	preemptions int
}

// Run explores f's schedules within cfg's bounds.
func Run(f *scenario.File, cfg Config) *Result {
	return search(cfg, func(st sched.Strategy) (string, []string) {
		o := fuzz.RunWith(f, scenario.Options{Strategy: st})
		return o.Schedule, o.Broken
	})
}

// search is the exploration over any deterministic program: run runs it
// once under the given strategy and returns its schedule hash and the
// invariants it broke.
func search(cfg Config, run func(sched.Strategy) (hash string, broken []string)) *Result {
	start := time.Now()
	res := &Result{Preemptions: cfg.Preemptions}
	seen := map[string]bool{}
	stack := []pending{{}}
	for len(stack) > 0 {
		if cfg.MaxSchedules > 0 && res.Schedules >= cfg.MaxSchedules || cfg.Duration > 0 && time.Since(start) >= cfg.Duration {
			break
		}
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		rec := &recorder{prefix: p.prefix}
		hash, broken := run(rec)
		res.Schedules++
		res.MaxDecisions = max(res.MaxDecisions, len(rec.trace))
		if !seen[hash] {
			seen[hash] = true
			res.Distinct++
		}
		if len(broken) > 0 {
			picks := make([]int32, len(rec.trace))
			n := 0
			for i, d := range rec.trace {
				picks[i] = d.chosen
				if d.preempts(d.chosen) {
					n++
				}
			}
			res.Violation = &Violation{Broken: broken, Picks: picks, Preemptions: n}
			break
		}
		// Children branch at the decisions past the prefix, last first
		// so the stack runs them in order; up to the branch point the
		// run made default (non-preempting) choices.
		for i := len(rec.trace) - 1; i >= len(p.prefix); i-- {
			d := rec.trace[i]
			if d.fair || d.spin {
				continue // see noBranch
			}
			for k := len(d.ready) - 1; k >= 0; k-- {
				alt := d.ready[k]
				if alt == d.chosen {
					continue
				}
				n := p.preemptions
				if d.preempts(alt) {
					n++
				}
				if n > cfg.Preemptions {
					continue
				}
				prefix := make([]int32, i+1)
				for j := range i {
					prefix[j] = rec.trace[j].chosen
				}
				prefix[i] = alt
				stack = append(stack, pending{prefix: prefix, preemptions: n})
			}
		}
		if cfg.Progress != nil {
			res.ElapsedMS = time.Since(start).Milliseconds()
			cfg.Progress(res)
		}
	}
	res.Exhausted = len(stack) == 0 && res.Violation == nil
	res.ElapsedMS = time.Since(start).Milliseconds()
	return res
}
