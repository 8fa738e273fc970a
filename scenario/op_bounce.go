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
	Workload
	VCPU  int  `yaml:"vcpu" doc:"the vCPU that does it (default 0)" min:"0"`
	GPA   Size `yaml:"gpa" doc:"the buffer's guest physical address (4K aligned, in RAM)" required:"true"`
	Size  Size `yaml:"size" doc:"bytes (default 4K), a multiple of 4K"`
	Times int  `yaml:"times" doc:"round trips (default 1)" min:"1"`
}

func (b *Bounce) Kind() string { return "bounce" }

// Smaller halves the round trips.
func (b *Bounce) Smaller() bool { return halve(&b.Times, 1) }

func (b *Bounce) check(c *timelineCheck, at string, i int, _ bool) error {
	f := c.f
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
	if err := c.pages4K(at, b.GPA, b.Size, ""); err != nil { // size is not 0: 4K by default
		return err
	}
	return c.liveRange(i, at, b.GPA, b.Size)
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
	return rn.onVCPU(t, td, b.VCPU, func(vt *sched.Thread, v *tdx.VCPU) error {
		for k := 0; k < b.Times; k++ {
			if err := td.g.RoundTrip(vt, v, gpa, size, true); err != nil {
				return err
			}
		}
		return nil
	})
}
