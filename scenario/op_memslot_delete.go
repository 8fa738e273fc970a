package scenario

import "github.com/tdxsim/tdxsim/sched"

// MemslotDelete deletes a memslot.
type MemslotDelete struct {
	TDRef
	Slot int `yaml:"slot" doc:"memslot index in the TD's memslots list" min:"0"`
}

func (d *MemslotDelete) Kind() string { return "memslot_delete" }

func (d *MemslotDelete) check(c *timelineCheck, at string, i int, _ bool) error {
	f := c.f
	k := d.Slot
	if n := len(f.memslots(i)); k < 0 || k >= n {
		return f.bad(at+".slot", "%d: %s has memslots 0..%d", k, f.Scenario.TDs[i].Name, n-1)
	}
	if !f.isRAMSlot(i, k) {
		return f.bad(at+".slot", "%d is the firmware's flash of %s, not RAM", k, f.Scenario.TDs[i].Name)
	}
	if where, ok := c.deleted[[2]int{i, k}]; ok {
		return f.bad(at+".slot", "memslot %d was deleted at %s", k, where)
	}
	c.deleted[[2]int{i, k}] = at
	return nil
}

// run deletes the memslot; the guest forgets its range.
func (d *MemslotDelete) run(rn *runner, t *sched.Thread, _ int) error {
	td := rn.tdOf(d.TD)
	if err := td.m.DeleteSlot(t, d.Slot); err != nil {
		return err
	}
	s := td.cfg.SlotLayout()[d.Slot]
	td.g.Forget(s.GPA, s.Size)
	return nil
}
