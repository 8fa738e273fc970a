package scenario

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
)

// Accept is an explicit accept of a GPA range, as firmware does it before
// the kernel's lazy accept: EDK2's BspAcceptMemoryResourceRange() (the
// unaligned head and tail at 4K, the 2M-aligned middle at
// PcdTdxAcceptPageSize) on the BSP, or MpAcceptMemoryResourceRange() (BSP
// and APs take PcdTdxAcceptMemoryChunkSize chunks in turn). Source:
// tianocore/edk2 OvmfPkg/Library/PlatformInitLib/IntelTdx.c and
// MdePkg/Library/TdxLib/AcceptPages.c (TdAcceptPages() falls back from 2M
// to 512 4K accepts on TDX_PAGE_SIZE_MISMATCH).
type Accept struct {
	Workload
	GPA   Size   `yaml:"gpa" doc:"first guest physical address (4K aligned, in RAM)" required:"true"`
	Size  Size   `yaml:"size" doc:"bytes, a multiple of 4K" required:"true"`
	Level string `yaml:"level" doc:"largest accept tried: 4K (every page on its own, EDK2's SIZE_4KB calls) or 2M (default: 2M where aligned, 4K for the unaligned head and tail)" enum:"4K,2M"`
	VCPUs string `yaml:"vcpus" doc:"bsp: vCPU 0 accepts it all (default); all: vCPU 0 accepts an unaligned head, then the vCPUs take chunk-sized pieces in turn, as EDK2's MpAcceptMemoryResourceRange does" enum:"bsp,all"`
	Chunk Size   `yaml:"chunk" doc:"vcpus all: bytes per piece (PcdTdxAcceptMemoryChunkSize; default 32M), a multiple of 2M"`
}

func (a *Accept) Kind() string { return "accept" }

// Smaller halves the range.
func (a *Accept) Smaller() bool {
	if a.Size > 2*addr.PageSize {
		a.Size = Size(uint64(a.Size) / 2 &^ (addr.PageSize - 1))
		return true
	}
	return false
}

func (a *Accept) check(c *timelineCheck, at string, i int, _ bool) error {
	f := c.f
	if err := enum(f, at+".level", a.Level, "4K", "2M"); err != nil {
		return err
	}
	if err := enum(f, at+".vcpus", a.VCPUs, "bsp", "all"); err != nil {
		return err
	}
	if a.Level == "" {
		a.Level = "2M"
	}
	if a.VCPUs == "" {
		a.VCPUs = "bsp"
	}
	if a.Chunk == 0 {
		a.Chunk = 32 << 20
	}
	if uint64(a.Chunk)%addr.Size2M != 0 {
		return f.bad(at+".chunk", "%#x is not a multiple of 2M", uint64(a.Chunk))
	}
	if err := c.pages4K(at, a.GPA, a.Size, ", size not 0"); err != nil {
		return err
	}
	return c.liveRange(i, at, a.GPA, a.Size)
}

// run accepts the range on vCPU 0, or on every vCPU in chunk turns.
func (a *Accept) run(rn *runner, t *sched.Thread, _ int) error {
	td := rn.tdOf(a.TD)
	lvl := addr.Level2M
	if a.Level == "4K" {
		lvl = addr.Level4K
	}
	lo, end := uint64(a.GPA), uint64(a.GPA)+uint64(a.Size)
	head := min(end, (lo+addr.Size2M-1)&^(addr.Size2M-1))
	chunk, nv := uint64(a.Chunk), uint64(len(td.m.VCPUs))
	if a.VCPUs == "bsp" || end-head <= chunk {
		return rn.onVCPU(t, td, 0, func(vt *sched.Thread, v *tdx.VCPU) error {
			return acceptUsable(vt, td, v, lo, end, lvl)
		})
	}
	return rn.onVCPUs(t, td, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
		if i == 0 && head > lo {
			if err := acceptUsable(vt, td, v, lo, head, lvl); err != nil {
				return err
			}
		}
		for p := head + uint64(i)*chunk; p < end; p += nv * chunk {
			if err := acceptUsable(vt, td, v, p, min(p+chunk, end), lvl); err != nil {
				return err
			}
		}
		return nil
	})
}

// acceptUsable accepts the runs of [lo, end) the guest uses as private
// memory: not reserved, not lost with a memslot, not converted to shared.
func acceptUsable(t *sched.Thread, td *tdRun, v *tdx.VCPU, lo, end uint64, lvl addr.Level) error {
	for p := lo; p < end; {
		if !td.g.Usable(p) || td.g.Shared(p) {
			p += addr.PageSize
			continue
		}
		q := p
		for q < end && td.g.Usable(q) && !td.g.Shared(q) {
			q += addr.PageSize
		}
		if err := td.g.AcceptRangeUpTo(t, v, p, q-p, lvl); err != nil {
			return err
		}
		p = q
	}
	return nil
}
