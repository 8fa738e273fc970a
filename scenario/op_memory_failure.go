package scenario

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/sched"
)

// MemoryFailure is a hardware error on one page.
type MemoryFailure struct {
	TDRef
	GPA Size `yaml:"gpa" doc:"the failing page (4K aligned)" required:"true"`
}

func (m *MemoryFailure) Kind() string { return "memory_failure" }

func (m *MemoryFailure) check(c *timelineCheck, at string, i int, _ bool) error {
	if g := uint64(m.GPA); g%addr.PageSize != 0 || !c.inLiveSlot(i, g, addr.PageSize) {
		return c.f.bad(at+".gpa", "%#x must be a 4K aligned GPA in a live memslot", g)
	}
	return nil
}

// run poisons the page. The guest is not told: its next access gets
// EHWPOISON (the VMM would inject a machine check).
func (m *MemoryFailure) run(rn *runner, t *sched.Thread, _ int) error {
	return rn.tdOf(m.TD).m.MemoryFailure(t, uint64(m.GPA))
}
