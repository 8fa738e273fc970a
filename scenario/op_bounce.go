package scenario

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
)

// Bounce is one vCPU converting the same small buffer to shared and back
// again and again, as a firmware DMA path does when every map of a DMA
// buffer makes it shared and every unmap makes it private again (EDK2's
// OvmfPkg/IoMmuDxe IoMmuMap()/IoMmuUnmap() through
// MemEncryptTdxSetPageSharedBit()/MemEncryptTdxClearPageSharedBit(); the
// latter MapGPAs the page private and accepts it at 4K). Each round trip
// is the guest's MapGPA to shared, a write and read through the shared
// alias, MapGPA to private, the 4K accept and a private write.
type Bounce struct {
	TD    string `yaml:"td" doc:"TD name (default: the only TD)"`
	VCPU  int    `yaml:"vcpu" doc:"the vCPU that does it (default 0)" min:"0"`
	GPA   Size   `yaml:"gpa" doc:"the buffer's guest physical address (4K aligned, in RAM)" required:"true"`
	Size  Size   `yaml:"size" doc:"bytes (default 4K), a multiple of 4K"`
	Times int    `yaml:"times" doc:"round trips (default 1)" min:"1"`
}

func (b *Bounce) Kind() string        { return "bounce" }
func (b *Bounce) TDName() string      { return b.TD }
func (b *Bounce) GuestWorkload() bool { return true }

// Smaller halves the round trips.
func (b *Bounce) Smaller() bool {
	if b.Times > 1 {
		b.Times /= 2
		return true
	}
	return false
}

func (b *Bounce) check(c *timelineCheck, at string, _ bool) error {
	f := c.f
	i, err := c.resolve(b.TD, at)
	if err != nil {
		return err
	}
	if b.Size == 0 {
		b.Size = addr.PageSize
	}
	if b.Times == 0 {
		b.Times = 1
	}
	if b.Times < 0 {
		return f.bad(at+".times", "%d: must be at least 1", b.Times)
	}
	if b.VCPU < 0 || b.VCPU >= max(f.Scenario.TDs[i].VCPUs, 1) {
		return f.bad(at+".vcpu", "%d: %s has %d vCPUs", b.VCPU, f.Scenario.TDs[i].Name, max(f.Scenario.TDs[i].VCPUs, 1))
	}
	if uint64(b.GPA)%addr.PageSize != 0 || uint64(b.Size)%addr.PageSize != 0 {
		return f.bad(at, "gpa %#x and size %#x must be 4K multiples", uint64(b.GPA), uint64(b.Size))
	}
	if !c.inLiveSlot(i, uint64(b.GPA), uint64(b.Size)) {
		return f.bad(at, "[%#x, +%#x) is not inside one live memslot of %s", uint64(b.GPA), uint64(b.Size), f.Scenario.TDs[i].Name)
	}
	return nil
}

// run does the round trips on the one vCPU.
func (b *Bounce) run(rn *runner, t *sched.Thread, _ int) error {
	td := rn.tdOf(b.TD)
	gpa, size := uint64(b.GPA), uint64(b.Size)
	for p := gpa; p < gpa+size; p += addr.PageSize {
		if !td.g.Usable(p) || td.g.Shared(p) {
			return nil // reserved, shared, or its slot went away
		}
	}
	return rn.onVCPUs(t, td, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
		if i != b.VCPU {
			return nil
		}
		for k := 0; k < b.Times; k++ {
			if err := td.g.RoundTrip(vt, v, gpa, size, true); err != nil {
				return err
			}
		}
		return nil
	})
}
