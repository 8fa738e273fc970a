// Package fuzz generates random scenarios from a seed, runs them under the
// deterministic scheduler with every invariant checked after every step,
// shrinks a failing one to a minimal scenario file, and summarises a
// campaign. The same seed always generates the same scenario, and the
// scenario file it writes replays the failure exactly (tdxsim replay).
package fuzz

import (
	"fmt"
	"math/rand/v2"

	"github.com/tdxsim/tdxsim/scenario"
)

// hostMemory is the host every generated scenario runs on: small enough
// that a run takes milliseconds, large enough for two TDs on HugeTLB.
const hostMemory = 4 << 30

// Generate returns the scenario for seed: one TD (sometimes two) of 32 to
// 256 MiB with one to four vCPUs, a memslot layout, a conversion mode, a
// small measured image, and a timeline that boots the guest and then runs
// guest workloads and host events, some of them concurrently. Every
// generated scenario is valid (Parse accepts it); a step the timeline
// rules refuse is left out.
func Generate(seed uint64, o Options) (*scenario.File, error) {
	g := &gen{r: rand.New(rand.NewPCG(seed, seed^0x5bd1e995)), hostile: o.Hostile}
	s := g.scenario(seed)
	// Build the timeline step by step, keeping each step the loader
	// accepts, so the result is always a valid file.
	steps := s.Timeline
	s.Timeline = nil
	f, err := parse(s, o)
	if err != nil {
		return nil, fmt.Errorf("fuzz: seed %d: generated host and TDs refused: %w", seed, err)
	}
	for _, st := range steps {
		s.Timeline = append(s.Timeline, st)
		if g2, err := parse(s, o); err == nil {
			f = g2
		} else {
			s.Timeline = s.Timeline[:len(s.Timeline)-1]
		}
	}
	return f, nil
}

// Options shape what Generate makes.
type Options struct {
	Kernel   string      // kernel profile (--kernel) of every scenario; its fixed policies win over the generator's picks
	Policies [][2]string // policy overrides (--policy k=v) set in every scenario
	Inject   [][2]string // fault injection (--inject k=v) set in every scenario
	// Hostile makes a third of the guest workloads hostile guests
	// (ACCEPT and MapGPA with any operands, racing vCPUs).
	Hostile bool
}

// parse writes s out and reads it back: the file a reproducer would be,
// validated, with defaults filled and the overrides applied.
func parse(s *scenario.Scenario, o Options) (*scenario.File, error) {
	if o.Kernel != "" {
		if err := s.ForceKernel(o.Kernel); err != nil {
			return nil, err
		}
	}
	b, err := scenario.Marshal(s)
	if err != nil {
		return nil, err
	}
	f, err := scenario.Parse("fuzz.yaml", b)
	if err != nil {
		return nil, err
	}
	for _, p := range o.Policies {
		if err := f.SetPolicy(p[0], p[1]); err != nil {
			return nil, err
		}
	}
	for _, p := range o.Inject {
		if err := f.SetInject(p[0], p[1]); err != nil {
			return nil, err
		}
	}
	return f, nil
}

type gen struct {
	r       *rand.Rand
	hostile bool
}

func (g *gen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }
func (g *gen) chance(p float64) bool    { return g.r.Float64() < p }

const mib = 1 << 20

func (g *gen) scenario(seed uint64) *scenario.Scenario {
	s := &scenario.Scenario{Name: fmt.Sprintf("fuzz-%d", seed), Seed: new(seed)}
	s.Host.Memory = hostMemory
	s.Policies.HugePages = g.pick("2M", "2M", "2M", "off")
	ntd := 1
	if g.chance(0.15) {
		ntd = 2
	}
	for i := range ntd {
		td := scenario.TD{Name: fmt.Sprintf("td%d", i), VCPUs: 1 + g.r.IntN(4)}
		mem := scenario.Size((16 + 16*g.r.IntN(8)) * 2 * mib) // 32..256M
		if g.chance(0.25) {
			// Two memslots on one guest_memfd, with a hole between.
			a := scenario.Size(2 * mib * (4 + g.r.IntN(12)))
			td.Memslots = []scenario.Memslot{{GPA: 0, Size: a}, {GPA: a + 64*mib, Size: mem - a}}
		} else {
			td.Memory = mem
		}
		switch {
		case g.chance(0.3):
			td.Conversion = "in_place"
		case g.chance(0.2):
			td.KeepSharedBacking = true
			if g.chance(0.5) {
				td.GmemOffset = scenario.Size(mib) // GFNs and indexes out of 2M step
			}
		}
		if g.chance(0.5) {
			top := uint64(mem) - 2*mib
			if len(td.Memslots) > 0 {
				top = uint64(td.Memslots[0].Size) - 2*mib
			}
			td.Image = []scenario.ImageRegion{{GPA: scenario.Size(top), Size: scenario.Size(64 << 10), Measure: true}}
		}
		s.TDs = append(s.TDs, td)
	}
	for i := range s.TDs {
		s.Timeline = append(s.Timeline, scenario.Step{Op: g.boot(&s.TDs[i])})
	}
	n := 2 + g.r.IntN(9)
	for range n {
		td := &s.TDs[g.r.IntN(len(s.TDs))]
		if g.chance(0.25) {
			// A guest workload racing host events on the same memory
			// (a TD's vCPUs run one workload at a time).
			par := scenario.Parallel{{Op: g.guestStep(td)}}
			for range 1 + g.r.IntN(2) {
				par = append(par, scenario.Step{Op: g.hostEvent(td, true)})
			}
			s.Timeline = append(s.Timeline, scenario.Step{Op: &par})
			continue
		}
		s.Timeline = append(s.Timeline, scenario.Step{Op: g.step(td, false)})
	}
	// A guest pass over its memory at the end reads back everything.
	for i := range s.TDs {
		s.Timeline = append(s.Timeline, scenario.Step{Op: &scenario.Touch{TD: s.TDs[i].Name, Pattern: "sequential", Write: new(false)}})
	}
	if td := &s.TDs[0]; g.chance(0.15) && keepsEveryPage(s.Timeline, td) {
		// A hardware error hits a page guest_memfd holds: touch it first.
		gpa := scenario.Size(g.page(td))
		s.Timeline = append(s.Timeline,
			scenario.Step{Op: &scenario.Touch{TD: td.Name, Pattern: "sequential", Start: gpa, Size: 4096, Count: 1}},
			scenario.Step{Op: &scenario.MemoryFailure{TD: td.Name, GPA: gpa}})
	}
	return s
}

// keepsEveryPage reports whether guest_memfd still holds a page for every
// GPA of td once it was touched: nothing in the timeline frees one
// (balloon, a punched hole, a conversion to shared that punches the
// private page). Only then may a memory_failure name any GPA: a hardware
// error hits a page, and a GPA without one is a scenario error (ENOENT),
// not a finding.
func keepsEveryPage(steps []scenario.Step, td *scenario.TD) bool {
	frees := func(op scenario.Op) bool {
		switch op.(type) {
		case *scenario.Balloon, *scenario.PunchHole:
			return true
		case *scenario.Convert:
			return td.Conversion != "in_place" && !td.KeepSharedBacking
		}
		return false
	}
	for _, st := range steps {
		for _, m := range append([]scenario.Step{st}, st.Members()...) {
			if m.Op != nil && frees(m.Op) && m.TDName() == td.Name {
				return false
			}
		}
	}
	return true
}

func ram(td *scenario.TD) uint64 {
	if len(td.Memslots) == 0 {
		return uint64(td.Memory)
	}
	var n uint64
	for _, m := range td.Memslots {
		n += uint64(m.Size)
	}
	return n
}

// page returns a random page GPA inside the TD's first memslot.
func (g *gen) page(td *scenario.TD) uint64 {
	end := uint64(td.Memory)
	if len(td.Memslots) > 0 {
		end = uint64(td.Memslots[0].Size)
	}
	return g.r.Uint64N(end>>12) << 12
}

// hostRange returns a random range of the first memslot: 4K to 4M,
// aligned to 2M half of the time.
func (g *gen) hostRange(td *scenario.TD) (scenario.Size, scenario.Size) {
	end := uint64(td.Memory)
	if len(td.Memslots) > 0 {
		end = uint64(td.Memslots[0].Size)
	}
	size := uint64(4096) << g.r.IntN(11)
	gpa := g.r.Uint64N(end/size) * size
	if g.chance(0.5) {
		size = 2 * mib
		gpa = g.r.Uint64N(end/size) * size
	}
	return scenario.Size(gpa), scenario.Size(size)
}

func (g *gen) boot(td *scenario.TD) scenario.Op {
	b := &scenario.Boot{TD: td.Name, Accept: g.pick("lazy", "lazy", "eager"), Level: g.pick("2M", "2M", "4K")}
	if b.Accept == "lazy" {
		b.Upfront = new(scenario.Size(2 * mib * uint64(g.r.IntN(8))))
	}
	return b
}

// step returns one random timeline step for td.
func (g *gen) step(td *scenario.TD, inParallel bool) scenario.Op {
	if g.chance(0.6) {
		return g.guestStep(td)
	}
	return g.hostEvent(td, inParallel)
}

// guestOps are the guest workloads the generator makes, by weight.
var guestOps = []struct {
	weight int
	make   func(g *gen, td *scenario.TD) scenario.Op
}{
	{4, (*gen).touch},
	{4, (*gen).convert},
	{1, (*gen).balloon},
}

// hostOps are the host events the generator makes, by weight, over a
// range it drew first.
var hostOps = []struct {
	weight int
	make   func(g *gen, td *scenario.TD, gpa, size scenario.Size, inParallel bool) scenario.Op
}{
	{1, (*gen).mmuNotifier},
	{1, (*gen).memoryTypeChange},
	{1, (*gen).punchHole},
}

// weighted picks an index with probability weight/sum.
func (g *gen) weighted(weights ...int) int {
	sum := 0
	for _, w := range weights {
		sum += w
	}
	k := g.r.IntN(sum)
	for i, w := range weights {
		if k < w {
			return i
		}
		k -= w
	}
	panic("unreachable")
}

// guestStep is a guest workload from guestOps, or in hostile mode
// sometimes a hostile guest.
func (g *gen) guestStep(td *scenario.TD) scenario.Op {
	if g.hostile && g.chance(0.35) {
		return &scenario.Hostile{TD: td.Name, Ops: 50 + g.r.IntN(450)}
	}
	ws := make([]int, len(guestOps))
	for i, o := range guestOps {
		ws[i] = o.weight
	}
	return guestOps[g.weighted(ws...)].make(g, td)
}

func (g *gen) touch(td *scenario.TD) scenario.Op {
	t := &scenario.Touch{TD: td.Name, Pattern: g.pick("sequential", "random", "zipf"), Count: 1 + g.r.IntN(512)}
	if g.chance(0.3) {
		t.Start = scenario.Size(g.r.Uint64N(ram(td)/(2*mib)) * 2 * mib)
	}
	return t
}

func (g *gen) convert(td *scenario.TD) scenario.Op {
	c := &scenario.Convert{TD: td.Name, Count: 1 + g.r.IntN(8), Size: scenario.Size(uint64(4096) << g.r.IntN(10)),
		Placement: "random"} // sequential ranges may run into punched or ballooned memory: a workload error, not a finding
	if g.chance(0.2) {
		c.Use = new(false)
	}
	return c
}

func (g *gen) balloon(td *scenario.TD) scenario.Op {
	return &scenario.Balloon{TD: td.Name, Size: scenario.Size(2 * mib * uint64(1+g.r.IntN(4)))}
}

// hostEvent is a host event from hostOps over a random range.
func (g *gen) hostEvent(td *scenario.TD, inParallel bool) scenario.Op {
	gpa, size := g.hostRange(td)
	ws := make([]int, len(hostOps))
	for i, o := range hostOps {
		ws[i] = o.weight
	}
	return hostOps[g.weighted(ws...)].make(g, td, gpa, size, inParallel)
}

func (g *gen) mmuNotifier(td *scenario.TD, gpa, size scenario.Size, _ bool) scenario.Op {
	return &scenario.MMUNotifier{TD: td.Name, GPA: gpa, Size: size}
}

func (g *gen) memoryTypeChange(td *scenario.TD, gpa, size scenario.Size, _ bool) scenario.Op {
	return &scenario.MemoryTypeChange{TD: td.Name, GPA: gpa, Size: size}
}

// punchHole punches whole 2 MiB pages; not beside other steps, nor at a
// guest_memfd offset out of step with the GPAs (a punch must cover whole
// huge pages of the file): a memory-type change there instead.
func (g *gen) punchHole(td *scenario.TD, gpa, size scenario.Size, inParallel bool) scenario.Op {
	if inParallel || td.GmemOffset != 0 {
		return g.memoryTypeChange(td, gpa, size, inParallel)
	}
	gpa &^= 2*mib - 1
	return &scenario.PunchHole{TD: td.Name, GPA: gpa, Size: scenario.Size(2 * mib)}
}
