package scenario

import (
	"math/rand/v2"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/sched"
)

// Touch is a memory-access workload.
type Touch struct {
	Workload
	Pattern string  `yaml:"pattern" doc:"which pages: sequential from start, random (uniform), or zipf (skewed to the start of the range)" enum:"sequential,random,zipf"`
	Start   Size    `yaml:"start" doc:"offset into guest RAM (in memslot order) where the range starts"`
	Size    Size    `yaml:"size" doc:"range size (default: the rest of RAM)"`
	Count   int     `yaml:"count" doc:"pages touched (default: every page of the range)" min:"0"`
	Write   *bool   `yaml:"write" doc:"write a tag after reading (default true)"`
	Skew    float64 `yaml:"skew" doc:"zipf exponent s > 1 (default 1.1)"`
}

func (w *Touch) Kind() string { return "touch" }

// Smaller halves the pages touched.
func (w *Touch) Smaller() bool { return halve(&w.Count, 1) }

func (w *Touch) check(c *timelineCheck, at string, i int, _ bool) error {
	f := c.f
	if err := enum(f, at+".pattern", w.Pattern, "sequential", "random", "zipf"); err != nil {
		return err
	}
	if w.Pattern == "" {
		w.Pattern = "sequential"
	}
	ram := c.ramBytes(i)
	if uint64(w.Start)%addr.PageSize != 0 || uint64(w.Size)%addr.PageSize != 0 {
		return f.bad(at, "start and size must be 4K multiples")
	}
	if w.Size == 0 && uint64(w.Start) < ram {
		w.Size = Size(ram - uint64(w.Start))
	}
	if uint64(w.Start)+uint64(w.Size) > ram || w.Size == 0 {
		return f.bad(at, "[start %#x, +%#x) is not inside the TD's RAM (%s)", uint64(w.Start), uint64(w.Size), report.HumanBytes(ram))
	}
	if w.Count < 0 {
		return f.bad(at+".count", "%d: must not be negative", w.Count)
	}
	if w.Count == 0 {
		w.Count = int(uint64(w.Size) / addr.PageSize)
	}
	if w.Skew == 0 {
		w.Skew = 1.1
	}
	if w.Skew <= 1 {
		return f.bad(at+".skew", "%g: zipf needs s > 1", w.Skew)
	}
	return nil
}

// run reads (and writes) pages picked by the pattern; touch k runs on
// vCPU k mod n.
func (w *Touch) run(rn *runner, t *sched.Thread, idx int) error {
	td := rn.tdOf(w.TD)
	pages := uint64(w.Size) / addr.PageSize
	write := w.Write == nil || *w.Write
	nv := len(td.m.VCPUs)
	return rn.onVCPUs(t, td, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
		r := rn.rng(idx, i)
		var z *rand.Zipf
		if w.Pattern == "zipf" {
			z = rand.NewZipf(r, w.Skew, 1, pages-1)
		}
		for k := i; k < w.Count; k += nv {
			var p uint64
			switch w.Pattern {
			case "sequential":
				p = uint64(k) % pages
			case "random":
				p = r.Uint64N(pages)
			default:
				p = z.Uint64()
			}
			gpa, _ := ramGPA(td.g, uint64(w.Start)+p*addr.PageSize)
			if !td.g.Usable(gpa) {
				continue
			}
			if err := td.g.Touch(vt, v, gpa, write); err != nil {
				return err
			}
		}
		return nil
	})
}
