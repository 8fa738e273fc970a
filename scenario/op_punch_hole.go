package scenario

import "github.com/tdxsim/tdxsim/sched"

// PunchHole is the VMM punching a hole in the guest_memfd.
type PunchHole struct{ HostRange }

func (p *PunchHole) Kind() string { return "punch_hole" }

// Smaller keeps a punched hole as it is (HostRange halves the range for
// the two zapping kinds only).
func (p *PunchHole) Smaller() bool { return false }

// run takes the memory away: the guest is told (as by a hot-unplug) and
// does not touch it again, so a later access is not a loss. mmu_notifier
// and memory_type_change must not lose anything, and the guest keeps
// using those ranges.
func (p *PunchHole) run(rn *runner, t *sched.Thread, _ int) error {
	td := rn.tdOf(p.TD)
	td.g.Forget(uint64(p.GPA), uint64(p.Size))
	return td.m.PunchHole(t, uint64(p.GPA), uint64(p.Size))
}
