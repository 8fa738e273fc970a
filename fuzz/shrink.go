package fuzz

import (
	"regexp"
	"slices"
	"strings"

	"github.com/tdxsim/tdxsim/scenario"
)

// Shrink returns the smallest scenario it finds that still breaks inv:
// it tries fewer steps, parallel groups run one after another, fewer
// vCPUs, less memory, fewer memslots and TDs, no image, and smaller
// counts and sizes, keeping each change that still fails, until no change
// helps or budget runs are spent (0: 400). The seed stays, so the result
// replays exactly.
func Shrink(f *scenario.File, inv string, budget int) *scenario.File {
	if budget <= 0 {
		budget = 400
	}
	best := f
	want := signature(RunOne(f), inv)
	for budget > 0 {
		improved := false
		for _, cand := range candidates(&best.Scenario) {
			if budget <= 0 {
				break
			}
			g, err := parse(cand, Options{})
			if err != nil {
				continue // the change made the file invalid
			}
			budget--
			if o := RunOne(g); slices.Contains(o.Broken, inv) && signature(o, inv) == want {
				best, improved = g, true
				break
			}
		}
		if !improved {
			break
		}
	}
	return best
}

// signature tells failures of one invariant apart where it matters: a
// step error is only the same failure when its message is, numbers aside
// (shrinking must not trade the bug for a refused smaller request).
func signature(o Outcome, inv string) string {
	if inv != StepError || o.Report == nil {
		return inv
	}
	msg := o.Report.Error
	if _, rest, ok := strings.Cut(msg, "): "); ok {
		msg = rest // drop "timeline[N] (kind"
	}
	return inv + ": " + numbers.ReplaceAllString(msg, "#")
}

var numbers = regexp.MustCompile(`0x[0-9a-fA-F]+|[0-9]+`)

// clone deep-copies a scenario through its YAML form (nil if it no longer
// validates).
func clone(s *scenario.Scenario) *scenario.Scenario {
	f, err := parse(s, Options{})
	if err != nil {
		return nil
	}
	return &f.Scenario
}

// candidates lists one-change simplifications of s, the biggest first.
func candidates(s *scenario.Scenario) []*scenario.Scenario {
	var out []*scenario.Scenario
	try := func(change func(c *scenario.Scenario) bool) {
		if c := clone(s); c != nil && change(c) {
			out = append(out, c)
		}
	}
	// Drop the second TD and its steps.
	if len(s.TDs) > 1 {
		for k := range s.TDs {
			try(func(c *scenario.Scenario) bool {
				name := c.TDs[k].Name
				c.TDs = slices.Delete(c.TDs, k, k+1)
				c.Timeline = slices.DeleteFunc(c.Timeline, func(st scenario.Step) bool { return st.TDName() == name })
				return true
			})
		}
	}
	// Drop a step, from the last.
	for i := len(s.Timeline) - 1; i >= 0; i-- {
		try(func(c *scenario.Scenario) bool { c.Timeline = slices.Delete(c.Timeline, i, i+1); return true })
	}
	// Run a parallel group's members one after another; drop a member.
	for i := range s.Timeline {
		if n := len(s.Timeline[i].Members()); n > 0 {
			try(func(c *scenario.Scenario) bool {
				members := c.Timeline[i].Members()
				c.Timeline = slices.Replace(c.Timeline, i, i+1, members...)
				return true
			})
			for j := range n {
				try(func(c *scenario.Scenario) bool {
					p := c.Timeline[i].Op.(*scenario.Parallel)
					*p = slices.Delete(*p, j, j+1)
					return true
				})
			}
		}
	}
	for k := range s.TDs {
		td := &s.TDs[k]
		if td.VCPUs > 1 {
			try(func(c *scenario.Scenario) bool { c.TDs[k].VCPUs = 1; return true })
			try(func(c *scenario.Scenario) bool { c.TDs[k].VCPUs /= 2; return true })
		}
		if len(td.Image) > 0 {
			try(func(c *scenario.Scenario) bool { c.TDs[k].Image = nil; return true })
		}
		if len(td.Memslots) > 1 {
			try(func(c *scenario.Scenario) bool {
				c.TDs[k].Memslots = c.TDs[k].Memslots[:1]
				c.TDs[k].Memory = c.TDs[k].Memslots[0].Size
				return true
			})
		}
		if len(td.Memslots) == 0 && td.Memory >= 8<<20 {
			try(func(c *scenario.Scenario) bool { c.TDs[k].Memory /= 2; return true })
		}
		if td.Conversion == "in_place" || td.KeepSharedBacking || td.GmemOffset != 0 {
			try(func(c *scenario.Scenario) bool {
				c.TDs[k].Conversion, c.TDs[k].KeepSharedBacking, c.TDs[k].GmemOffset = "kvm", false, 0
				return true
			})
		}
	}
	// Smaller steps.
	for i := range s.Timeline {
		try(func(c *scenario.Scenario) bool { return smaller(&c.Timeline[i]) })
	}
	return out
}

// smaller halves a step's count or size (its op's Smaller); false when
// it has none to halve.
func smaller(st *scenario.Step) bool { return st.Op != nil && st.Op.Smaller() }
