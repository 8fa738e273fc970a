package scenario

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/sched"
)

// Boot is the guest's boot-time accept.
type Boot struct {
	Workload
	Accept  string `yaml:"accept" doc:"eager: accept all memory at boot; lazy: accept only upfront, the rest on first touch (Linux accept_memory=lazy, the default)" enum:"eager,lazy"`
	Upfront *Size  `yaml:"upfront" doc:"lazy: bytes accepted at boot from the lowest GPA (default 512M, a lazy-accept OVMF's PcdLazyAcceptPartialMemorySize)"`
	Level   string `yaml:"level" doc:"largest accept the guest tries: 4K, 2M (default) or 1G; it falls back on TDX_PAGE_SIZE_MISMATCH" enum:"4K,2M,1G"`
}

func (b *Boot) Kind() string { return "boot" }

// Smaller accepts nothing upfront.
func (b *Boot) Smaller() bool {
	if b.Upfront != nil && *b.Upfront > 0 {
		*b.Upfront = 0
		return true
	}
	return false
}

func (b *Boot) check(c *timelineCheck, at string, i int, _ bool) error {
	f := c.f
	if where, ok := c.booted[i]; ok {
		return f.bad(at, "%s already booted at %s", f.Scenario.TDs[i].Name, where)
	}
	c.booted[i] = at
	if err := enum(f, at+".accept", b.Accept, "eager", "lazy"); err != nil {
		return err
	}
	if err := enum(f, at+".level", b.Level, "4K", "2M", "1G"); err != nil {
		return err
	}
	if b.Accept == "" {
		b.Accept = "lazy"
	}
	if b.Level == "" {
		b.Level = "2M"
	}
	if b.Upfront != nil && b.Accept == "eager" {
		return f.bad(at+".upfront", "goes with accept: lazy")
	}
	if b.Upfront == nil && b.Accept == "lazy" {
		u := Size(min(defaultUpfront, c.ramBytes(i)))
		b.Upfront = &u
	}
	if b.Upfront != nil && (uint64(*b.Upfront)%addr.PageSize != 0 || uint64(*b.Upfront) > c.ramBytes(i)) {
		return f.bad(at+".upfront", "%#x must be a 4K multiple no larger than the TD's RAM (%s)", uint64(*b.Upfront), report.HumanBytes(c.ramBytes(i)))
	}
	return nil
}

// run accepts memory at boot: all of it (eager) or the first upfront
// bytes (lazy), each vCPU a share, on 2 MiB boundaries where it can.
func (b *Boot) run(rn *runner, t *sched.Thread, _ int) error {
	td := rn.tdOf(b.TD)
	lvl := map[string]addr.Level{"4K": addr.Level4K, "2M": addr.Level2M, "1G": addr.Level1G}[b.Level]
	td.g.SetMaxAcceptLevel(lvl)
	n := td.g.RAMBytes()
	if b.Accept == "lazy" {
		n = uint64(*b.Upfront)
	}
	nv := uint64(len(td.m.VCPUs))
	per := (n / nv) &^ (addr.PageSize - 1)
	if per >= addr.Size2M {
		per &^= addr.Size2M - 1
	}
	return rn.onVCPUs(t, td, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
		lo, cnt := uint64(i)*per, per
		if uint64(i) == nv-1 {
			cnt = n - lo
		}
		return rn.acceptOffsets(vt, td.g, v, lo, cnt)
	})
}
