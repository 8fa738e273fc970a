package scenario

import "github.com/tdxsim/tdxsim/sched"

// PunchHole is the VMM punching a hole in the guest_memfd.
type PunchHole HostRange

func (p *PunchHole) Kind() string        { return "punch_hole" }
func (p *PunchHole) TDName() string      { return p.TD }
func (p *PunchHole) GuestWorkload() bool { return false }
func (p *PunchHole) Smaller() bool       { return false }
func (p *PunchHole) check(c *timelineCheck, at string, _ bool) error {
	return (*HostRange)(p).check(c, at)
}

// run takes the memory away: the guest is told (as by a hot-unplug) and
// does not touch it again, so a later access is not a loss. mmu_notifier
// and memory_type_change must not lose anything, and the guest keeps
// using those ranges.
func (p *PunchHole) run(rn *runner, t *sched.Thread, _ int) error {
	td := rn.tdOf(p.TD)
	td.g.Forget(uint64(p.GPA), uint64(p.Size))
	return td.m.PunchHole(t, uint64(p.GPA), uint64(p.Size))
}
