package scenario

import (
	"fmt"
	"math/bits"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/sched"
)

// Convert is a conversion workload.
type Convert struct {
	Workload
	Count     int    `yaml:"count" doc:"how many ranges" min:"1" required:"true"`
	Size      Size   `yaml:"size" doc:"bytes per range, a multiple of 4K (default 4K); ranges are aligned to their size when it is a power of two"`
	Placement string `yaml:"placement" doc:"random (default) or sequential from start" enum:"random,sequential"`
	Start     Size   `yaml:"start" doc:"sequential: offset into guest RAM of the first range"`
	Back      *bool  `yaml:"back" doc:"convert back to private and re-accept (default true)"`
	Use       *bool  `yaml:"use" doc:"write and read each page through the shared alias while shared (default true)"`
	Content   string `yaml:"content" doc:"KVM_SET_MEMORY_ATTRIBUTES2 content mode of the private-to-shared conversions (conversion: in_place, a kernel with content modes): default, or zero (guest_memfd zeroes the range; the guest must read zeros through the shared alias). preserve is refused: a TD takes it only to private before KVM_TDX_FINALIZE_VM" enum:"default,zero,preserve"`
}

func (cv *Convert) Kind() string { return "convert" }

// Smaller halves the ranges, then their size.
func (cv *Convert) Smaller() bool { return halve(&cv.Count, 1) || halve(&cv.Size, 4096) }

func (cv *Convert) check(c *timelineCheck, at string, i int, _ bool) error {
	f := c.f
	if err := enum(f, at+".placement", cv.Placement, "random", "sequential"); err != nil {
		return err
	}
	if cv.Placement == "" {
		cv.Placement = "random"
	}
	if cv.Size == 0 {
		cv.Size = addr.PageSize
	}
	if uint64(cv.Size)%addr.PageSize != 0 {
		return f.bad(at+".size", "%#x is not a multiple of 4K", uint64(cv.Size))
	}
	if uint64(cv.Start)%addr.PageSize != 0 {
		return f.bad(at+".start", "%#x is not a multiple of 4K", uint64(cv.Start))
	}
	if cv.Count < 1 {
		return f.bad(at+".count", "%d: need at least one range", cv.Count)
	}
	if err := cv.checkContent(c, at, i); err != nil {
		return err
	}
	if need := uint64(cv.Count) * uint64(cv.Size); need/uint64(cv.Size) != uint64(cv.Count) || need > c.ramBytes(i)/2 || uint64(cv.Start)+need > c.ramBytes(i) {
		return f.bad(at, "%d ranges of %s from %#x do not fit: at most half the TD's RAM (%s), inside it", cv.Count, report.HumanBytes(uint64(cv.Size)), uint64(cv.Start), report.HumanBytes(c.ramBytes(i)))
	}
	return nil
}

// run converts ranges to shared (and back), range k on vCPU k mod n.
func (cv *Convert) run(rn *runner, t *sched.Thread, idx int) error {
	td := rn.tdOf(cv.TD)
	ranges, err := rn.placeRanges(td, cv, idx)
	if err != nil {
		return err
	}
	size := uint64(cv.Size)
	back, use := cv.Back == nil || *cv.Back, cv.Use == nil || *cv.Use
	nv := len(td.m.VCPUs)
	if cv.Content == "zero" {
		td.m.SetContentToShared(gmem.ContentZero)
		td.g.ExpectSharedZero(true)
		defer td.m.SetContentToShared(0)
		defer td.g.ExpectSharedZero(false)
	}
	return rn.onVCPUs(t, td, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
		for k := i; k < len(ranges); k += nv {
			gpa := ranges[k]
			if back {
				if err := td.g.RoundTrip(vt, v, gpa, size, use); err != nil {
					return err
				}
				continue
			}
			if err := td.g.ConvertToShared(vt, v, gpa, size); err != nil {
				return err
			}
			if use {
				if err := td.g.UseShared(vt, v, gpa, size); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// placeRanges picks count ranges of size bytes for a conversion: random
// (aligned to size when it is a power of two, never overlapping, never
// on pages the guest does not use or already shared) or sequential.
func (rn *runner) placeRanges(td *tdRun, c *Convert, idx int) ([]uint64, error) {
	size := uint64(c.Size)
	align := uint64(addr.PageSize)
	if bits.OnesCount64(size) == 1 {
		align = size
	}
	usable := func(gpa uint64) bool {
		for p := gpa; p < gpa+size; p += addr.PageSize {
			if !td.g.Usable(p) || td.g.Shared(p) {
				return false
			}
		}
		return td.g.InRAM(gpa, size)
	}
	var out []uint64
	if c.Placement == "sequential" {
		for k := range c.Count {
			gpa, ok := ramGPA(td.g, uint64(c.Start)+uint64(k)*size)
			if !ok || !usable(gpa) {
				return nil, fmt.Errorf("sequential range %d at RAM offset %#x is not usable private memory (image, shared, or outside a memslot)", k, uint64(c.Start)+uint64(k)*size)
			}
			out = append(out, gpa)
		}
		return out, nil
	}
	r := rn.rng(idx, 1<<15)
	slots := td.g.RAMBytes() / align
	taken := map[uint64]bool{} // by align-sized slot: one entry per range, not per page
	for len(out) < c.Count {
		found := false
		for try := 0; try < 1000 && !found; try++ {
			gpa, ok := ramGPA(td.g, r.Uint64N(slots)*align)
			first, last := gpa/align, (gpa+size-1)/align
			clash := false
			for p := first; p <= last; p++ {
				clash = clash || taken[p]
			}
			if !ok || clash || !usable(gpa) {
				continue
			}
			for p := first; p <= last; p++ {
				taken[p] = true
			}
			out = append(out, gpa)
			found = true
		}
		if !found {
			return nil, fmt.Errorf("could not place range %d of %d (%s each) in usable private memory", len(out), c.Count, report.HumanBytes(size))
		}
	}
	return out, nil
}

// checkContent validates content: a known mode; zero needs the TD's
// conversion in_place and a kernel profile whose KVM_SET_MEMORY_ATTRIBUTES2
// has content modes; preserve is never valid for a running TD. Series:
// "[PATCH RFC v5 22/53] KVM: guest_memfd: Apply content modes while
// setting memory attributes" (flags) and "[PATCH RFC v5 26/53] KVM: x86:
// Support SNP and TDX applying content modes" (TDX: PRESERVE only
// to_private && !pre_fault_allowed), both
// 20260428-gmem-inplace-conversion-v5-*-d8608ccfca22@google.com.
func (cv *Convert) checkContent(c *timelineCheck, at string, i int) error {
	f := c.f
	if err := enum(f, at+".content", cv.Content, "default", "zero", "preserve"); err != nil {
		return err
	}
	switch cv.Content {
	case "", "default": // left as written: a saved scenario stays as it was
		return nil
	case "preserve":
		return f.bad(at+".content", "preserve: a TD takes KVM_SET_MEMORY_ATTRIBUTES2_PRESERVE only to private before KVM_TDX_FINALIZE_VM (kvm_arch_gmem_supported_content_modes(), \"[PATCH RFC v5 26/53]\"), and a convert step runs after boot: it would fail with EOPNOTSUPP; use default or zero")
	}
	return f.contentRule(at+".content", i)
}

// contentRule checks content: zero of a convert step at field against
// tds[i].conversion and the kernel profile; SetKernel runs it again for
// every such step (checkContentSteps).
func (f *File) contentRule(field string, i int) error {
	if prof := f.Profile(); !prof.HasContentMode("zero") {
		return f.bad(field, "zero conflicts with %s: its KVM_SET_MEMORY_ATTRIBUTES2 has no content modes (flags must be 0; the in-place series dropped them in v6); use a kernel with them, e.g. gmem-inplace-rfc-v5 or BASE+gmem-inplace-rfc-v5", f.kernelWhere())
	}
	if conv := f.Scenario.TDs[i].Conversion; conv != "in_place" {
		return f.bad(field, "zero conflicts with tds[%d].conversion: %s: content modes are flags of KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd, used by conversion: in_place only", i, conv)
	}
	return nil
}

// checkContentSteps re-checks every convert step's content: zero after
// --kernel changed the profile.
func (f *File) checkContentSteps() error {
	var walk func(steps []Step, at string) error
	walk = func(steps []Step, at string) error {
		for k := range steps {
			here := fmt.Sprintf("%s[%d]", at, k)
			switch op := steps[k].Op.(type) {
			case *Parallel:
				if err := walk(*op, here+".parallel"); err != nil {
					return err
				}
			case *Convert:
				if op.Content != "zero" {
					continue
				}
				i := 0
				if op.TD != "" {
					i = f.td(op.TD)
				}
				if i < 0 {
					continue
				}
				if err := f.contentRule(here+".convert.content", i); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(f.Scenario.Timeline, "timeline")
}
