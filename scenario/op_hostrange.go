package scenario

// HostRange is a host event over a GPA range of a TD: the body of
// punch_hole, memory_type_change and mmu_notifier, which embed it for
// their keys, check and Smaller.
type HostRange struct {
	TDRef
	GPA  Size `yaml:"gpa" doc:"first guest physical address (4K aligned)"`
	Size Size `yaml:"size" doc:"bytes, a multiple of 4K" required:"true"`
}

// check checks the range lies in one live memslot of its TD.
func (r *HostRange) check(c *timelineCheck, at string, i int, _ bool) error {
	if err := c.pages4K(at, r.GPA, r.Size, ", size non-zero"); err != nil {
		return err
	}
	if !c.inLiveSlot(i, uint64(r.GPA), uint64(r.Size)) {
		return c.f.bad(at, "[%#x, %#x) is not inside one live memslot of %s", uint64(r.GPA), uint64(r.GPA+r.Size), c.f.Scenario.TDs[i].Name)
	}
	return nil
}

// Smaller halves the range's size, down to a page.
func (r *HostRange) Smaller() bool { return halve(&r.Size, 4096) }
