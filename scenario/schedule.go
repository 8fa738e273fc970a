package scenario

import (
	"strconv"
	"strings"

	"github.com/tdxsim/tdxsim/sched"
)

// Schedule pins how the deterministic scheduler picks the next thread at
// each scheduling point (sched.Strategy). The workload's own randomness
// keeps the scenario's seed, so the same scenario runs under many
// schedules (tdxsim fuzz --schedules, tdxsim explore).
type Schedule struct {
	Strategy string  `yaml:"strategy" doc:"random (default): uniform among the runnable threads; pct: PCT priorities with depth-1 change points (Burckhardt et al., ASPLOS 2010); fixed: the picks below, then the running thread goes on while it can (else the lowest runnable id)" enum:"random,pct,fixed"`
	Seed     *uint64 `yaml:"seed" doc:"scheduler seed of random and pct (default: the scenario's seed)"`
	Depth    int     `yaml:"depth" doc:"pct: the bug depth d, d-1 priority change points (default 3)" min:"1" max:"64"`
	Steps    int     `yaml:"steps" doc:"pct: the estimated scheduling decisions of the run, over which the change points are drawn (default 1000)"`
	Picks    string  `yaml:"picks" doc:"fixed: the thread id run at each decision with more than one runnable thread, in order, separated by spaces (tdxsim explore writes them)"`
}

// Default PCT parameters.
const (
	DefaultPCTDepth = 3
	DefaultPCTSteps = 1000
)

func (f *File) validateSchedule() error {
	sc := &f.Scenario.Schedule
	if err := enum(f, "schedule.strategy", sc.Strategy, "random", "pct", "fixed"); err != nil {
		return err
	}
	switch {
	case sc.Depth < 0 || sc.Depth > 64:
		return f.bad("schedule.depth", "%d: must be 1..64", sc.Depth)
	case sc.Steps < 0:
		return f.bad("schedule.steps", "%d: must be positive", sc.Steps)
	case sc.Strategy != "pct" && (sc.Depth != 0 || sc.Steps != 0):
		return f.bad("schedule", "depth and steps apply to strategy pct only")
	case sc.Strategy != "fixed" && sc.Picks != "":
		return f.bad("schedule.picks", "picks apply to strategy fixed only")
	}
	if _, err := ParsePicks(sc.Picks); err != nil {
		return f.bad("schedule.picks", "%v", err)
	}
	return nil
}

// ParsePicks reads schedule.picks: thread ids separated by spaces.
func ParsePicks(s string) ([]int32, error) {
	var ids []int32
	for _, w := range strings.Fields(s) {
		n, err := strconv.ParseUint(w, 10, 31)
		if err != nil {
			return nil, &strconvError{w}
		}
		ids = append(ids, int32(n))
	}
	return ids, nil
}

type strconvError struct{ w string }

func (e *strconvError) Error() string {
	return strconv.Quote(e.w) + " is not a thread id (0, 1, 2, ...)"
}

// FormatPicks writes ids as schedule.picks.
func FormatPicks(ids []int32) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(int(id)))
	}
	return b.String()
}

// strategy is the scheduler strategy of schedule sc with the scenario's
// seed as the default.
func (sc *Schedule) strategy(seed uint64) sched.Strategy {
	if sc.Seed != nil {
		seed = *sc.Seed
	}
	switch sc.Strategy {
	case "pct":
		d, k := sc.Depth, sc.Steps
		if d == 0 {
			d = DefaultPCTDepth
		}
		if k == 0 {
			k = DefaultPCTSteps
		}
		return sched.PCT(seed, d, k)
	case "fixed":
		ids, _ := ParsePicks(sc.Picks) // validated
		return Fixed(ids)
	}
	return sched.Random(seed)
}

// Fixed is the strategy of schedule.picks: at each decision with more
// than one runnable thread it runs the next id of picks (if that thread
// is not runnable, or the picks ran out, it falls back); the fallback
// lets the running thread go on, else runs the lowest runnable id.
func Fixed(picks []int32) sched.Strategy { return &fixed{picks: picks} }

type fixed struct {
	picks []int32
	i     int
}

func (x *fixed) Pick(from *sched.Thread, running bool, ready []*sched.Thread) int {
	if len(ready) == 1 {
		return 0
	}
	if x.i < len(x.picks) {
		id := x.picks[x.i]
		x.i++
		for j, t := range ready {
			if t.ID() == id {
				return j
			}
		}
	}
	return NonPreemptive(from, running, ready)
}

// NonPreemptive is the default choice of a fixed schedule: the running
// thread goes on while it can, else the lowest runnable id runs.
func NonPreemptive(from *sched.Thread, running bool, ready []*sched.Thread) int {
	if running {
		for j, t := range ready {
			if t == from {
				return j
			}
		}
	}
	return 0
}
