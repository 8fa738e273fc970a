// Package fuzz generates random scenarios from a seed, runs them under the
// deterministic scheduler with every invariant checked after every step,
// shrinks a failing one to a minimal scenario file, and summarises a
// campaign. The same seed always generates the same scenario, and the
// scenario file it writes replays the failure exactly (tdxsim replay).
package fuzz

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/scenario"
)

// DefaultMaxMemory is the largest TD the generator makes unless
// Options.MaxMemory says otherwise: bugs need interleavings, not
// gigabytes, and a small TD runs in milliseconds.
const DefaultMaxMemory = 64 << 20

// MinMaxMemory is the smallest --max-memory: one 8 MiB TD.
const MinMaxMemory = 8 << 20

// hostMemory is the host a scenario with TDs of at most maxMem runs on:
// 4 GiB, or room for two of them on HugeTLB and the TDX module's
// metadata.
func hostMemory(maxMem uint64) uint64 {
	return max(4<<30, (2*maxMem+(1<<30)+(1<<30)-1)&^(1<<30-1))
}

// Generate returns the scenario for seed: one TD (sometimes two) of 8 MiB
// to Options.MaxMemory with one to four vCPUs, a memslot layout, a
// conversion mode, a small measured image, sometimes fault injection, and
// a timeline that boots the guest and then runs the steps stepWeights
// draws (guest workloads, host events, hostile guests, idle time, memslot
// deletion, a teardown, groups of steps racing each other), then reads
// every page back. Every generated scenario is valid (Parse accepts it);
// a step the timeline rules refuse is left out.
func Generate(seed uint64, o Options) (*scenario.File, error) {
	g := &gen{r: rand.New(rand.NewPCG(seed, seed^0x5bd1e995)), hostile: o.Hostile, weights: weightsFor(o), maxMem: o.maxMemory(), injectSet: len(o.Inject) > 0, faultSet: o.Faults}
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
	// (ACCEPT and MapGPA with any operands, racing vCPUs); without it
	// they are stepWeights' share.
	Hostile bool
	// Faults is the fault set the generator draws from (FaultSets; ""
	// is FaultsMenu).
	Faults string
	// MaxMemory bounds each TD's memory (0: DefaultMaxMemory); a
	// multiple of 2 MiB, at least MinMaxMemory (CheckMaxMemory).
	MaxMemory uint64
}

func (o Options) maxMemory() uint64 {
	if o.MaxMemory == 0 {
		return DefaultMaxMemory
	}
	return o.MaxMemory
}

// CheckMaxMemory says what is wrong with a --max-memory (nil: nothing).
func CheckMaxMemory(n uint64) error {
	switch {
	case n%(2<<20) != 0:
		return fmt.Errorf("%#x is not a multiple of 2M", n)
	case n < MinMaxMemory:
		return fmt.Errorf("%d bytes: want at least 8M", n)
	case n > 1<<40:
		return fmt.Errorf("%d bytes: want at most 1T (two TDs must fit the model's 4T host)", n)
	}
	return nil
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
	r         *rand.Rand
	weights   []int  // stepWeights' weights for this campaign
	maxMem    uint64 // largest TD
	injectSet bool   // --inject given: the menu fault set adds none of its own
	faultSet  string // Options.Faults
	hostile   bool   // --hostile: a third of the guest workloads are hostile
	// ballooned is each TD's balloon total so far (by name).
	ballooned map[string]uint64
	// failure is set when memory_failure was drawn: it goes after the
	// final read pass (a later access to the page would be EHWPOISON).
	failure bool
}

func (g *gen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }
func (g *gen) chance(p float64) bool    { return g.r.Float64() < p }

func (g *gen) scenario(seed uint64) *scenario.Scenario {
	s := &scenario.Scenario{Name: fmt.Sprintf("fuzz-%d", seed), Seed: new(seed)}
	s.Host.Memory = scenario.Size(hostMemory(g.maxMem))
	s.Policies.HugePages = g.pick("2M", "2M", "2M", "off")
	ntd := 1
	if g.chance(genConfig.twoTDs) {
		ntd = 2
	}
	units := int(g.maxMem / (2 * addr.MiB)) // 2 MiB units of the largest TD
	for i := range ntd {
		td := scenario.TD{Name: fmt.Sprintf("td%d", i), VCPUs: 1 + g.r.IntN(4)}
		mem := scenario.Size(2 * addr.MiB * uint64(4+g.r.IntN(units-3))) // 8M..max
		if g.chance(genConfig.twoSlots) && mem >= 16*addr.MiB {
			// Two memslots on one guest_memfd, with a hole between.
			a := scenario.Size(2 * addr.MiB * uint64(1+g.r.IntN(int(mem/(2*addr.MiB))-1)))
			td.Memslots = []scenario.Memslot{{GPA: 0, Size: a}, {GPA: a + 64*addr.MiB, Size: mem - a}}
		} else {
			td.Memory = mem
		}
		switch {
		case g.chance(genConfig.inPlace):
			td.Conversion = "in_place"
		case g.chance(genConfig.keepShared):
			td.KeepSharedBacking = true
			if g.chance(0.5) {
				td.GmemOffset = scenario.Size(addr.MiB) // GFNs and indexes out of 2M step
			}
		}
		if g.chance(genConfig.image) {
			top := uint64(mem) - 2*addr.MiB
			if len(td.Memslots) > 0 {
				top = uint64(td.Memslots[0].Size) - 2*addr.MiB
			}
			td.Image = []scenario.ImageRegion{{GPA: scenario.Size(top), Size: scenario.Size(64 << 10), Measure: true}}
		}
		s.TDs = append(s.TDs, td)
	}
	s.Inject = g.faults()
	for i := range s.TDs {
		s.Timeline = append(s.Timeline, scenario.Step{Op: g.boot(&s.TDs[i])})
	}
	n := 2 + g.r.IntN(9)
	for range n {
		td := &s.TDs[g.r.IntN(len(s.TDs))]
		k := stepWeights[g.weighted(g.weights...)]
		s.Timeline = append(s.Timeline, k.make(g, s, td)...)
	}
	// A guest pass over its memory at the end reads back everything.
	for i := range s.TDs {
		s.Timeline = append(s.Timeline, scenario.Step{Op: &scenario.Touch{Workload: workload(&s.TDs[i]), Pattern: "sequential", Write: new(false)}})
	}
	if td := &s.TDs[0]; g.failure && keepsEveryPage(s.Timeline, td) {
		// A hardware error hits a page guest_memfd holds: touch it first.
		gpa := scenario.Size(g.page(td))
		s.Timeline = append(s.Timeline,
			scenario.Step{Op: &scenario.Touch{Workload: workload(td), Pattern: "sequential", Start: gpa, Size: 4096, Count: 1}},
			scenario.Step{Op: &scenario.MemoryFailure{TDRef: onTD(td), GPA: gpa}})
	}
	return s
}

// keepsEveryPage reports whether guest_memfd still holds a page for every
// GPA of td once it was touched: nothing in the timeline frees one
// (balloon, a punched hole, a conversion to shared that punches the
// private page, a deleted memslot, a teardown, a hostile guest's MapGPA).
// Only then may a memory_failure name any GPA: a hardware error hits a
// page, and a GPA without one is a scenario error (ENOENT), not a
// finding.
func keepsEveryPage(steps []scenario.Step, td *scenario.TD) bool {
	frees := func(op scenario.Op) bool {
		switch op.(type) {
		case *scenario.Balloon, *scenario.PunchHole, *scenario.MemslotDelete, *scenario.Teardown, *scenario.Hostile:
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

// slot0 is the size of the TD's first memslot.
func slot0(td *scenario.TD) uint64 {
	if len(td.Memslots) > 0 {
		return uint64(td.Memslots[0].Size)
	}
	return uint64(td.Memory)
}

// workload, onTD and rangeOn name td in a generated step: a guest
// workload's, a host event's on one TD, a host event's over a range.
func workload(td *scenario.TD) scenario.Workload { return scenario.Workload{TD: td.Name} }
func onTD(td *scenario.TD) scenario.TDRef        { return scenario.TDRef{TD: td.Name} }
func rangeOn(td *scenario.TD, gpa, size scenario.Size) scenario.HostRange {
	return scenario.HostRange{TDRef: onTD(td), GPA: gpa, Size: size}
}

// page returns a random page GPA inside the TD's first memslot.
func (g *gen) page(td *scenario.TD) uint64 { return g.r.Uint64N(slot0(td)>>12) << 12 }

// hostRange returns a random range of the first memslot: 4K to 4M (at
// most the slot), aligned to its size; 2M half of the time.
func (g *gen) hostRange(td *scenario.TD) (scenario.Size, scenario.Size) {
	end := slot0(td)
	size := min(uint64(4096)<<g.r.IntN(11), end)
	gpa := g.r.Uint64N(end/size) * size
	if g.chance(0.5) {
		size = 2 * addr.MiB
		gpa = g.r.Uint64N(end/size) * size
	}
	return scenario.Size(gpa), scenario.Size(size)
}

func (g *gen) boot(td *scenario.TD) scenario.Op {
	b := &scenario.Boot{Workload: workload(td), Accept: g.pick("lazy", "lazy", "eager"), Level: g.pick("2M", "2M", "4K")}
	if b.Accept == "lazy" {
		b.Upfront = new(scenario.Size(2 * addr.MiB * uint64(g.r.IntN(int(min(8, ram(td)/(2*addr.MiB)))))))
	}
	return b
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

func (g *gen) touch(td *scenario.TD) scenario.Op {
	t := &scenario.Touch{Workload: workload(td), Pattern: g.pick("sequential", "random", "zipf"), Count: 1 + g.r.IntN(512)}
	if g.chance(0.3) {
		t.Start = scenario.Size(g.r.Uint64N(ram(td)/(2*addr.MiB)) * 2 * addr.MiB)
	}
	return t
}

func (g *gen) convert(td *scenario.TD) scenario.Op {
	c := &scenario.Convert{Workload: workload(td), Count: 1 + g.r.IntN(8), Size: scenario.Size(uint64(4096) << g.r.IntN(10)),
		Placement: "random"} // sequential ranges may run into punched or ballooned memory: a workload error, not a finding
	if g.chance(0.2) {
		c.Use = new(false)
	}
	return c
}

// balloon inflates by 2-8 MiB, keeping the TD's balloons together at
// half its RAM at most: more may not fit beside the image and the pages
// in use (the step fails with "only N of usable private memory left", a
// workload error, not a finding).
func (g *gen) balloon(td *scenario.TD) scenario.Op {
	most := max(1, min(4, int(ram(td)/(4*addr.MiB)))) // at most half the RAM
	size := 2 * addr.MiB * uint64(1+g.r.IntN(most))
	if g.ballooned == nil {
		g.ballooned = map[string]uint64{}
	}
	if g.ballooned[td.Name]+size > ram(td)/2 {
		return nil
	}
	g.ballooned[td.Name] += size
	return &scenario.Balloon{Workload: workload(td), Size: scenario.Size(size)}
}

func (g *gen) hostileGuest(td *scenario.TD) scenario.Op {
	return &scenario.Hostile{Workload: workload(td), Ops: 50 + g.r.IntN(450)}
}

func (g *gen) idle(*scenario.Scenario, *scenario.TD) []scenario.Step {
	return []scenario.Step{{Op: &scenario.Idle{Time: scenario.Duration(time.Duration(1+g.r.IntN(50)) * time.Millisecond)}}}
}

// memslotDelete deletes one of a two-memslot TD's slots (the loader
// leaves out a second deletion of the same one).
func (g *gen) memslotDelete(_ *scenario.Scenario, td *scenario.TD) []scenario.Step {
	if len(td.Memslots) < 2 {
		return nil
	}
	return []scenario.Step{{Op: &scenario.MemslotDelete{TDRef: onTD(td), Slot: g.r.IntN(len(td.Memslots))}}}
}

// memoryFailure asks for a hardware error after the final read pass.
func (g *gen) memoryFailure(*scenario.Scenario, *scenario.TD) []scenario.Step {
	g.failure = true
	return nil
}

// teardown tears a TD down in the middle of the timeline: the other TD
// runs on, and the loader leaves out the torn-down TD's later steps.
func (g *gen) teardown(_ *scenario.Scenario, td *scenario.TD) []scenario.Step {
	return []scenario.Step{{Op: &scenario.Teardown{TD: td.Name}}}
}

// parallel is a guest workload racing one or two host events on the same
// memory (a TD's vCPUs run one workload at a time); with two TDs,
// sometimes the other TD's workload runs beside them.
func (g *gen) parallel(s *scenario.Scenario, td *scenario.TD) []scenario.Step {
	par := scenario.Parallel{{Op: g.guestKind(td)}}
	for range 1 + g.r.IntN(2) {
		par = append(par, scenario.Step{Op: g.hostKind(td)})
	}
	if len(s.TDs) > 1 && g.chance(0.3) {
		other := &s.TDs[0]
		if other == td {
			other = &s.TDs[1]
		}
		par = append(par, scenario.Step{Op: g.guestKind(other)})
	}
	return []scenario.Step{{Op: &par}}
}

func (g *gen) guestKind(td *scenario.TD) scenario.Op {
	if g.hostile && g.chance(genConfig.hostileGuests) {
		return g.hostileGuest(td)
	}
	ws := make([]int, len(guestKinds))
	for i, k := range guestKinds {
		ws[i] = k.weight
	}
	return guestKinds[g.weighted(ws...)].make(g, td)
}

func (g *gen) hostKind(td *scenario.TD) scenario.Op {
	gpa, size := g.hostRange(td)
	ws := make([]int, len(hostKinds))
	for i, k := range hostKinds {
		ws[i] = k.weight
	}
	return hostKinds[g.weighted(ws...)].make(g, td, gpa, size, true)
}

func (g *gen) mmuNotifier(td *scenario.TD, gpa, size scenario.Size, _ bool) scenario.Op {
	return &scenario.MMUNotifier{HostRange: rangeOn(td, gpa, size)}
}

func (g *gen) memoryTypeChange(td *scenario.TD, gpa, size scenario.Size, _ bool) scenario.Op {
	return &scenario.MemoryTypeChange{HostRange: rangeOn(td, gpa, size)}
}

// punchHole punches whole 2 MiB pages; not beside other steps, nor at a
// guest_memfd offset out of step with the GPAs (a punch must cover whole
// huge pages of the file): a memory-type change there instead.
func (g *gen) punchHole(td *scenario.TD, gpa, size scenario.Size, inParallel bool) scenario.Op {
	if inParallel || td.GmemOffset != 0 || slot0(td) < 2*addr.MiB {
		return g.memoryTypeChange(td, gpa, size, inParallel)
	}
	gpa &^= 2*addr.MiB - 1
	return &scenario.PunchHole{HostRange: rangeOn(td, gpa, scenario.Size(2*addr.MiB))}
}
