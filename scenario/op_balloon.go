package scenario

import (
	"fmt"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/sched"
)

// Balloon gives guest memory back to the host.
type Balloon struct {
	Workload
	Size Size `yaml:"size" doc:"bytes, a multiple of 2M, taken from the top of guest RAM" required:"true"`
}

func (b *Balloon) Kind() string { return "balloon" }

// Smaller halves the memory given back (in 2 MiB units).
func (b *Balloon) Smaller() bool { return halve(&b.Size, 2<<20) }

func (b *Balloon) check(c *timelineCheck, at string, i int, _ bool) error {
	if n := uint64(b.Size); n == 0 || n%addr.Size2M != 0 || n > c.ramBytes(i)/2 {
		return c.f.bad(at+".size", "%#x must be a non-zero multiple of 2M, at most half the TD's RAM", n)
	}
	return nil
}

// run gives the top of guest RAM back to the host: the guest converts it
// to shared in 2 MiB units (vCPUs in turn), then the VMM discards it.
func (b *Balloon) run(rn *runner, t *sched.Thread, _ int) error {
	td := rn.tdOf(b.TD)
	var units []uint64
	ram := td.g.RAM()
	for i := len(ram) - 1; i >= 0 && uint64(len(units))*addr.Size2M < uint64(b.Size); i-- {
		for gpa := ram[i].End() - addr.Size2M; gpa >= ram[i].GPA && uint64(len(units))*addr.Size2M < uint64(b.Size); gpa -= addr.Size2M {
			ok := true
			for p := gpa; p < gpa+addr.Size2M; p += addr.PageSize {
				ok = ok && td.g.Usable(p) && !td.g.Shared(p)
			}
			if ok {
				units = append(units, gpa)
			}
			if gpa == 0 {
				break
			}
		}
	}
	if uint64(len(units))*addr.Size2M < uint64(b.Size) {
		return fmt.Errorf("balloon: only %s of usable private memory left", report.HumanBytes(uint64(len(units))*addr.Size2M))
	}
	nv := len(td.m.VCPUs)
	if err := rn.onVCPUs(t, td, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
		for k := i; k < len(units); k += nv {
			if err := td.g.ConvertToShared(vt, v, units[k], addr.Size2M); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	for _, u := range units {
		if err := td.m.DiscardShared(t, u, addr.Size2M); err != nil {
			return err
		}
	}
	return nil
}
