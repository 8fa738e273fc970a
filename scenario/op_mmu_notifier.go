package scenario

import "github.com/tdxsim/tdxsim/sched"

// MMUNotifier is an MMU-notifier invalidation of the VMM's mapping.
type MMUNotifier struct{ HostRange }

func (m *MMUNotifier) Kind() string { return "mmu_notifier" }

// run invalidates the range. Kernel: kvm_mmu_notifier_invalidate_range_start().
func (m *MMUNotifier) run(rn *runner, t *sched.Thread, _ int) error {
	return rn.tdOf(m.TD).m.MMUNotifier(t, uint64(m.GPA), uint64(m.Size))
}
