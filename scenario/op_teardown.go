package scenario

import "github.com/tdxsim/tdxsim/sched"

// Teardown is the VMM closing the guest_memfd and the VM. It is a TDRef
// of its own type, not one embedding it: its rule against running in a
// parallel group comes before its TD, so it resolves the TD itself.
type Teardown TDRef

func (d *Teardown) Kind() string        { return "teardown" }
func (d *Teardown) TDName() string      { return d.TD }
func (d *Teardown) GuestWorkload() bool { return false }
func (d *Teardown) Smaller() bool       { return false }

func (d *Teardown) check(c *timelineCheck, at string, _ int, inParallel bool) error {
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
