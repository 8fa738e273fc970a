package scenario

import (
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
)

// Hostile is a hostile guest's burst of operations.
type Hostile struct {
	Workload
	Ops int `yaml:"ops" doc:"operations per vCPU: TDG.MEM.PAGE.ACCEPT at any GPA and level, MapGPA over any range, touches (default 100)" max:"100000"`
}

func (h *Hostile) Kind() string { return "hostile" }

func (h *Hostile) check(c *timelineCheck, at string, _ int, _ bool) error {
	if h.Ops == 0 {
		h.Ops = 100
	}
	if h.Ops < 1 || h.Ops > 100000 {
		return c.f.bad(at+".ops", "%d: want 1 to 100000", h.Ops)
	}
	return nil
}

// run runs a hostile guest on every vCPU of the TD at once; what the host
// answered is counted in the report. Only a host-side failure is an
// error.
func (h *Hostile) run(rn *runner, t *sched.Thread, idx int) error {
	td := rn.tdOf(h.TD)
	nv := len(td.m.VCPUs)
	return rn.onVCPUs(t, td, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
		return td.g.Hostile(vt, v, i, nv, h.Ops, rn.rng(idx, i), func(op, outcome string) {
			rn.hostileMu.Lock()
			rn.hostileOps[op+": "+outcome]++
			rn.hostileMu.Unlock()
		})
	})
}
