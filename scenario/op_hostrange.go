package scenario

import "github.com/tdxsim/tdxsim/addr"

// HostRange is a host event over a GPA range of a TD: the body of
// punch_hole, memory_type_change and mmu_notifier.
type HostRange struct {
	TD   string `yaml:"td" doc:"TD name (default: the only TD)"`
	GPA  Size   `yaml:"gpa" doc:"first guest physical address (4K aligned)"`
	Size Size   `yaml:"size" doc:"bytes, a multiple of 4K" required:"true"`
}

// check checks the range lies in one live memslot of its TD.
func (r *HostRange) check(c *timelineCheck, at string) error {
	i, err := c.resolve(r.TD, at)
	if err != nil {
		return err
	}
	if uint64(r.GPA)%addr.PageSize != 0 || uint64(r.Size)%addr.PageSize != 0 || r.Size == 0 {
		return c.f.bad(at, "gpa %#x and size %#x must be 4K multiples, size non-zero", uint64(r.GPA), uint64(r.Size))
	}
	if !c.inLiveSlot(i, uint64(r.GPA), uint64(r.Size)) {
		return c.f.bad(at, "[%#x, %#x) is not inside one live memslot of %s", uint64(r.GPA), uint64(r.GPA+r.Size), c.f.Scenario.TDs[i].Name)
	}
	return nil
}

// halve halves the range's size, down to a page.
func (r *HostRange) halve() bool {
	if r.Size > 4096 {
		r.Size /= 2
		return true
	}
	return false
}
