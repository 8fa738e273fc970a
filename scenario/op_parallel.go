package scenario

import (
	"fmt"

	"github.com/tdxsim/tdxsim/sched"
)

// Parallel is steps run concurrently, each on its own thread.
type Parallel []Step

func (p *Parallel) Kind() string        { return "parallel" }
func (p *Parallel) TDName() string      { return "" }
func (p *Parallel) GuestWorkload() bool { return false }
func (p *Parallel) Smaller() bool       { return false }

func (p *Parallel) check(c *timelineCheck, at string, _ int, inParallel bool) error {
	f := c.f
	if inParallel {
		return f.bad(at, "parallel steps do not nest")
	}
	if len(*p) < 2 {
		return f.bad(at, "needs at least two steps")
	}
	// A vCPU runs one thing at a time: two guest workloads of one TD
	// would drive its vCPUs from two threads at once.
	busy := map[string]int{}
	for k := range *p {
		sub := &(*p)[k]
		if err := c.step(sub, fmt.Sprintf("%s[%d]", at, k), true); err != nil {
			return err
		}
		if sub.GuestWorkload() {
			name := sub.TDName()
			if name == "" {
				name = f.Scenario.TDs[0].Name // the only TD
			}
			if j, dup := busy[name]; dup {
				return f.bad(fmt.Sprintf("%s[%d]", at, k), "a second guest workload of TD %q beside %s[%d]: a TD's vCPUs run one workload at a time", name, at, j)
			}
			busy[name] = k
		}
	}
	return nil
}

// run runs each member on its own thread and waits for all.
func (p *Parallel) run(rn *runner, t *sched.Thread, idx int) error {
	steps := *p
	g := sched.NewGroup(t, "parallel steps done")
	for k := range steps {
		sub := &steps[k]
		th := g.Go(fmt.Sprintf("step%d.%d", idx, k), func(pt *sched.Thread) error {
			err := rn.step(pt, sub, idx*64+k+1)
			return rn.matchExpected(sub, fmt.Sprintf("timeline[%d].parallel[%d]", idx, k), err)
		})
		rn.nameThread(th.ID(), fmt.Sprintf("step%d.%d", idx, k))
	}
	return g.Wait()
}
