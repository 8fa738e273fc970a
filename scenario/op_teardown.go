package scenario

import "github.com/tdxsim/tdxsim/sched"

// TDRef names a TD.
type TDRef struct {
	TD string `yaml:"td" doc:"TD name (default: the only TD)"`
}

// Teardown is the VMM closing the guest_memfd and the VM.
type Teardown TDRef

func (d *Teardown) Kind() string        { return "teardown" }
func (d *Teardown) TDName() string      { return d.TD }
func (d *Teardown) GuestWorkload() bool { return false }
func (d *Teardown) Smaller() bool       { return false }

func (d *Teardown) check(c *timelineCheck, at string, inParallel bool) error {
	if inParallel {
		return c.f.bad(at, "teardown cannot run in parallel with other steps")
	}
	i, err := c.resolve(d.TD, at)
	if err != nil {
		return err
	}
	c.torn[i] = at
	return nil
}

func (d *Teardown) run(rn *runner, t *sched.Thread, _ int) error {
	return rn.teardown(t, rn.tdOf(d.TD))
}
