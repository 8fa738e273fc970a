package scenario

import "github.com/tdxsim/tdxsim/sched"

// MemoryTypeChange is a memory-type change zapping a range.
type MemoryTypeChange struct{ HostRange }

func (m *MemoryTypeChange) Kind() string { return "memory_type_change" }

// run zaps the range. Kernel: kvm_zap_gfn_range().
func (m *MemoryTypeChange) run(rn *runner, t *sched.Thread, _ int) error {
	return rn.tdOf(m.TD).m.MemtypeChange(t, uint64(m.GPA), uint64(m.Size))
}
