package scenario

import (
	"time"

	"github.com/tdxsim/tdxsim/sched"
)

// Idle is time with nothing running.
type Idle struct {
	Time Duration `yaml:"time" doc:"how long, as a Go duration (10ms, 1.5s)" required:"true"`
}

func (d *Idle) Kind() string        { return "idle" }
func (d *Idle) TDName() string      { return "" }
func (d *Idle) GuestWorkload() bool { return false }
func (d *Idle) Smaller() bool       { return false }

func (d *Idle) check(c *timelineCheck, at string, _ int, _ bool) error {
	if d.Time == 0 {
		return c.f.bad(at+".time", "required, positive")
	}
	return nil
}

// run adds modeled time only.
func (d *Idle) run(rn *runner, _ *sched.Thread, _ int) error {
	rn.clock.Idle(uint64(time.Duration(d.Time)))
	return nil
}
