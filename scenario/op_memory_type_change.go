package scenario

import "github.com/tdxsim/tdxsim/sched"

// MemoryTypeChange is a memory-type change zapping a range.
type MemoryTypeChange HostRange

func (m *MemoryTypeChange) Kind() string        { return "memory_type_change" }
func (m *MemoryTypeChange) TDName() string      { return m.TD }
func (m *MemoryTypeChange) GuestWorkload() bool { return false }

// Smaller halves the range.
func (m *MemoryTypeChange) Smaller() bool { return (*HostRange)(m).halve() }

func (m *MemoryTypeChange) check(c *timelineCheck, at string, _ bool) error {
	return (*HostRange)(m).check(c, at)
}

// run zaps the range. Kernel: kvm_zap_gfn_range().
func (m *MemoryTypeChange) run(rn *runner, t *sched.Thread, _ int) error {
	return rn.tdOf(m.TD).m.MemtypeChange(t, uint64(m.GPA), uint64(m.Size))
}
