package scenario

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/guest"
	"github.com/tdxsim/tdxsim/inject"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/vmm"
)

// Options are the run-time choices of one run (command-line flags).
type Options struct {
	// Seed overrides the scenario's seed when non-nil.
	Seed *uint64
	// Progress, if set, is called after each timeline step with the
	// number of steps done and the total (build and teardown count as
	// one step each).
	Progress func(done, total int)
	// Sink also receives every event (traces, tests); nil for none.
	Sink event.Sink
	// Trace, if set, gets a line per step: what ran, the SEAMCALLs it
	// made, and the checks it broke (tdxsim replay).
	Trace io.Writer
	// Parallel runs the simulated threads on real goroutines (sched.Parallel)
	// instead of the seeded deterministic scheduler: faster on many cores,
	// but the interleaving (and so some counts) varies from run to run.
	Parallel bool
	// NoStepChecks skips the cross-layer walks of the check package after
	// each step (what the layers report themselves, lock order and the
	// guest's reads, is still counted): for measuring what they cost.
	NoStepChecks bool
	// OnStep, if set, is called at each step boundary (after the build
	// and after every timeline step) with the state then, from the VMM
	// thread while no other simulated thread runs: what viewers show
	// (tdxsim serve's timeline). It must only read.
	OnStep func(StepView)
	// TraceLocks makes every lock acquire and release an event (for a
	// trace's lock holds), not only the waits.
	TraceLocks bool
}

// StepView is the state at one step boundary.
type StepView struct {
	At    string            // "build", "timeline[3] (convert)"
	World check.World       // the TDs not torn down
	Calls map[string]uint64 // SEAMCALLs and TDCALLs so far, by leaf
	// Violations is how many violations the run has reported so far.
	Violations int
}

// ErrRun marks a run the model could not complete (a step failed without
// an expect_error for it); the report says which step and why.
var ErrRun = errors.New("run stopped")

// tdRun is one TD during a run.
type tdRun struct {
	spec *TD
	cfg  vmm.Config
	m    *vmm.VMM
	g    *guest.Guest
	// seenProblems is how many guest problems the last check saw.
	seenProblems int
	mrtd         []byte
	torn         bool
	septPeak     int
	charged      uint64 // peak bytes charged to the VM
	// captured at teardown
	mmuStats   mmu.Stats
	tdStats    tdx.Stats
	vmmStats   vmm.Stats
	chargedEnd uint64 // after every TD's teardown: a DPAMT pair one TD installed may be freed by another's last put
	bugged     string
	mappedEnd  [3]int64 // private leaves right before teardown
}

type runner struct {
	f      *File
	o      Options
	seed   uint64
	host   *tdx.Host
	s      *sched.Scheduler
	clock  *report.Clock
	count  *event.Counter
	tds    []*tdRun
	r      *report.Run
	checks map[string][2]int // name -> run, failed
	order  []string
	// what the layers had reported at the last check
	seenEvents, seenLocks int
	// hostileOps counts a hostile guest's operations by what the host
	// answered ("accept: TDX_SUCCESS").
	hostileMu  sync.Mutex
	hostileOps map[string]int64
	// inj is the fault injector (nil without injection).
	inj *inject.Injector
	// phase is where the run is ("build", "timeline[3] (convert)",
	// "teardown"): what is reported after the scheduler stopped (a
	// deadlock, say) is attributed to it.
	phase string
	// what the last Options.Trace line covered
	traceCalls, traceSteps uint64
	traceViolations        int
	done                   int
	total                  int
	// peaks sampled at step boundaries
	pamtPeak    uint64
	pamtStatic  uint64
	pamtDynPeak uint64
	dpamtPeak   int
	ptPeak      int64
}

// Run runs a loaded scenario and returns its report. The error is
// ErrRun-wrapped when a step failed unexpectedly (the report's Error
// says which), or a setup failure (the host could not be built).
func Run(f *File, o Options) (*report.Run, error) {
	rn := &runner{f: f, o: o, seed: *f.Seed, count: event.NewCounter(), checks: map[string][2]int{}, hostileOps: map[string]int64{}}
	if o.Seed != nil {
		rn.seed = *o.Seed
	}
	costs := f.Costs()
	rn.clock = report.NewClock(costs)
	var sink event.Sink = event.Tee{rn.count, rn.clock}
	if o.Sink != nil {
		sink = event.Tee{rn.count, rn.clock, o.Sink}
	}
	name := f.Name
	if name == "" {
		name = f.Path
	}
	rn.r = &report.Run{Scenario: name, Seed: rn.seed, Violations: []string{}, Expectations: []report.Expectation{}}
	if err := rn.setup(sink); err != nil {
		return nil, err
	}
	rn.total = len(f.Timeline) + 2
	mode := sched.Deterministic
	if o.Parallel {
		mode = sched.Parallel
	}
	rn.s = sched.New(mode, rn.seed, sink)
	if o.TraceLocks {
		rn.s.TraceLocks()
	}
	freeBefore := int64(rn.host.Mem.FreePages())
	var runErr error
	th := rn.s.Go("vmm", func(t *sched.Thread) { runErr = rn.main(t) })
	rn.nameThread(th.ID(), "vmm")
	schedErr := rn.s.Run()
	rn.clock.End()
	leaked := freeBefore - int64(rn.host.Mem.FreePages())
	rn.finish(leaked)
	if schedErr != nil {
		runErr = errors.Join(runErr, schedErr)
	}
	if runErr != nil {
		rn.r.Error = runErr.Error()
		if f.Expect.Error != "" && strings.Contains(runErr.Error(), f.Expect.Error) {
			rn.expect("error "+f.Expect.Error, true, runErr.Error())
			return rn.r, nil
		}
		if f.Expect.Error != "" {
			rn.expect("error "+f.Expect.Error, false, "the run stopped with another error")
		}
		return rn.r, fmt.Errorf("%w: %w", ErrRun, runErr)
	}
	if f.Expect.Error != "" {
		rn.expect("error "+f.Expect.Error, false, "the run completed without an error")
	}
	return rn.r, nil
}

// setup boots the host and sizes it for the TDs.
func (rn *runner) setup(sink event.Sink) error {
	f := rn.f
	pol := f.Policies
	hp, err := mmu.ParseHugePages(pol.HugePages)
	if err != nil {
		return err
	}
	mof, err := mmu.ParseMaxOrderFrom(pol.MaxOrderFrom)
	if err != nil {
		return err
	}
	var cfgs []vmm.Config
	for i := range f.TDs {
		spec := &f.TDs[i]
		cfg := vmm.Config{MemBytes: uint64(spec.Memory), VCPUs: spec.VCPUs, InPlace: spec.Conversion == "in_place",
			KeepSharedBacking: spec.KeepSharedBacking, GmemOffset: uint64(spec.GmemOffset),
			TD: tdx.Config{MMU: mmu.Config{HugePages: hp, MaxOrderFrom: mof, ZapPrivateOnNotifier: pol.ZapPrivateOnNotifier},
				PinPrivatePages: pol.PinPrivatePages, PopulateThroughFault: pol.Populate == "gmem_populate",
				ExternalSPTFromPrealloc: pol.ExternalSPTCache == "tdx_prealloc"}}
		for _, m := range spec.Memslots {
			cfg.Slots = append(cfg.Slots, vmm.Slot{GPA: uint64(m.GPA), Size: uint64(m.Size)})
		}
		cfgs = append(cfgs, cfg)
		rn.tds = append(rn.tds, &tdRun{spec: spec, cfg: cfg})
	}
	kcfg := kvm.DefaultConfig()
	kcfg.SplitFolioFirst = pol.SplitOrder == "folio_first"
	rn.host, err = vmm.NewHost(vmm.HostConfig{Bytes: uint64(f.Host.Memory), DynamicPAMT: *pol.DynamicPAMT,
		Packages: f.Host.Packages, Allow1GAug: f.Host.TDX.MaxLevel == "1G", KVM: &kcfg, TDs: cfgs}, sink)
	if err != nil {
		return err
	}
	ic, err := f.InjectConfig()
	if err != nil || !ic.Any() {
		return err
	}
	ic.Seed = rn.seed
	rn.inj = inject.New(ic)
	rn.host.Mod.SetInjector(rn.inj.SEAMCALL)
	rn.host.Mem.SetAllocFailer(rn.inj.Alloc)
	return nil
}

// nameThread names a simulated thread for the clock's per-thread totals
// and, when the sink keeps tracks (a trace), for its track.
func (rn *runner) nameThread(id int32, name string) {
	rn.clock.Name(id, name)
	if n, ok := rn.o.Sink.(interface{ Name(int32, string) }); ok {
		n.Name(id, name)
	}
}

func (rn *runner) progress() {
	rn.done++
	if rn.o.Progress != nil {
		rn.o.Progress(rn.done, rn.total)
	}
}

// main is the VMM thread: build every TD, run the timeline, tear down.
func (rn *runner) main(t *sched.Thread) error {
	rn.clock.Begin("build")
	rn.phase = "build"
	var stop error
	for i, td := range rn.tds {
		if err := rn.build(t, td, i); err != nil {
			stop = fmt.Errorf("building %s: %w", td.spec.Name, err)
			break
		}
	}
	if stop == nil {
		rn.sample("build")
	}
	rn.progress()
	for i := range rn.f.Timeline {
		if stop != nil {
			break // the build failed: tear down what was built
		}
		st := &rn.f.Timeline[i]
		at := fmt.Sprintf("timeline[%d]", i)
		rn.phase = fmt.Sprintf("%s (%s)", at, st.kind())
		rn.clock.Begin(fmt.Sprintf("%d %s", i, st.kind()))
		err := rn.step(t, st, i)
		rn.conversionProgress(st, err)
		if err = rn.matchExpected(st, at, err); err != nil {
			stop = fmt.Errorf("%s (%s): %w", at, st.kind(), err)
			rn.newReports(fmt.Sprintf("%s (%s)", at, st.kind()))
			rn.trace(fmt.Sprintf("%s (%s)", at, st.kind()), err)
			break
		}
		rn.sample(fmt.Sprintf("%s (%s)", at, st.kind()))
		rn.progress()
	}
	rn.phase = "teardown"
	for _, td := range rn.tds {
		if !td.torn {
			rn.clock.Begin("teardown")
			break
		}
	}
	for _, td := range rn.tds {
		if !td.torn {
			if err := rn.teardown(t, td); err != nil && stop == nil {
				stop = fmt.Errorf("teardown of %s: %w", td.spec.Name, err)
			}
		}
	}
	rn.progress()
	return stop
}

// conversionProgress checks, after a guest workload (or a parallel group
// with one), that none of its conversions ended with the guest giving up
// on TDVMCALL_RETRY.
func (rn *runner) conversionProgress(st *Step, err error) {
	var tds []string
	for _, m := range append([]Step{*st}, st.Parallel...) {
		if m.GuestWorkload() {
			tds = append(tds, m.TDName())
		}
	}
	if len(tds) == 0 {
		return
	}
	var mf *guest.MapGPAError
	if !errors.As(err, &mf) || !mf.Stuck() {
		rn.check(rn.phase, check.ConversionProgress)
		return
	}
	var why []string
	for _, name := range tds {
		if td := rn.tdOf(name); td != nil && td.m != nil && td.m.TD.LastMapGPARetry() != "" {
			why = append(why, td.spec.Name+": "+td.m.TD.LastMapGPARetry())
		}
	}
	rn.check(rn.phase, check.ConversionProgress, fmt.Sprintf("%v: the guest gave up after %d retries without progress; the host's last EAGAIN: %s",
		mf, guest.MapGPARetries, strings.Join(why, "; ")))
}

// matchExpected applies a step's expect_error to what the step returned.
func (rn *runner) matchExpected(st *Step, at string, err error) error {
	if st.ExpectError == "" {
		return err
	}
	what := fmt.Sprintf("%s fails with %s", at, st.ExpectError)
	switch {
	case err == nil:
		rn.expect(what, false, "the step succeeded")
	case strings.Contains(err.Error(), st.ExpectError):
		rn.expect(what, true, err.Error())
	default:
		rn.expect(what, false, err.Error())
		return err
	}
	return nil
}

func (rn *runner) expect(what string, ok bool, detail string) {
	rn.r.Expectations = append(rn.r.Expectations, report.Expectation{What: what, OK: ok, Detail: detail})
}

// build creates a TD, loads and measures its image, finalizes it and
// makes its guest.
func (rn *runner) build(t *sched.Thread, td *tdRun, i int) error {
	m, err := vmm.Create(t, rn.host, td.cfg)
	if err != nil {
		return err
	}
	td.m = m
	var regions []vmm.Region
	var reserved []guest.Range
	for k, r := range td.spec.Image {
		data := rn.f.images[i][k]
		regions = append(regions, vmm.Region{GPA: uint64(r.GPA), Data: data, Measure: r.Measure})
		reserved = append(reserved, guest.Range{GPA: uint64(r.GPA), Size: (uint64(len(data)) + addr.PageSize - 1) &^ (addr.PageSize - 1)})
	}
	if err := m.LoadImage(t, regions); err != nil {
		return err
	}
	if td.mrtd, err = m.Finalize(t); err != nil {
		return err
	}
	var ram []guest.Range
	for _, s := range td.cfg.SlotLayout() {
		ram = append(ram, guest.Range{GPA: s.GPA, Size: s.Size})
	}
	td.g, err = guest.New(m.TD, m.VCPUs, guest.Config{RAM: ram, MaxAcceptLevel: addr.Level2M, Reserved: reserved})
	return err
}

func (rn *runner) tdOf(name string) *tdRun {
	if name == "" {
		return rn.tds[0]
	}
	for _, td := range rn.tds {
		if td.spec.Name == name {
			return td
		}
	}
	return nil // validation resolved every name
}

// onVCPUs runs fn on a thread per vCPU of td and waits for all.
func (rn *runner) onVCPUs(t *sched.Thread, td *tdRun, fn func(vt *sched.Thread, i int, v *tdx.VCPU) error) error {
	g := sched.NewGroup(t, td.spec.Name+" vCPUs done")
	for i, v := range td.m.VCPUs {
		th := g.Go(fmt.Sprintf("%s/vcpu%d", td.spec.Name, i), func(vt *sched.Thread) error {
			defer v.Halt()
			return fn(vt, i, v)
		})
		rn.nameThread(th.ID(), fmt.Sprintf("%s/vcpu%d", td.spec.Name, i))
	}
	return g.Wait()
}

// ramGPA maps an offset into the TD's RAM (its memslots in order) to a GPA.
func ramGPA(g *guest.Guest, off uint64) (uint64, bool) {
	for _, r := range g.RAM() {
		if off < r.Size {
			return r.GPA + off, true
		}
		off -= r.Size
	}
	return 0, false
}

func (rn *runner) rng(stepIndex, stream int) *rand.Rand {
	return rand.New(rand.NewPCG(rn.seed, uint64(stepIndex)<<16|uint64(stream)))
}

// step runs one timeline step on the VMM thread t.
func (rn *runner) step(t *sched.Thread, st *Step, idx int) error {
	switch {
	case st.Boot != nil:
		return rn.boot(t, st.Boot)
	case st.Touch != nil:
		return rn.touch(t, st.Touch, idx)
	case st.Convert != nil:
		return rn.convert(t, st.Convert, idx)
	case st.Balloon != nil:
		return rn.balloon(t, st.Balloon)
	case st.Hostile != nil:
		return rn.hostile(t, st.Hostile, idx)
	case st.Idle != nil:
		rn.clock.Idle(uint64(time.Duration(st.Idle.Time)))
		return nil
	case st.PunchHole != nil:
		// The host takes the memory away: the guest is told (as by a
		// hot-unplug) and does not touch it again, so a later access is
		// not a loss. mmu_notifier and memory_type_change must not lose
		// anything, and the guest keeps using those ranges.
		td := rn.tdOf(st.PunchHole.TD)
		td.g.Forget(uint64(st.PunchHole.GPA), uint64(st.PunchHole.Size))
		return td.m.PunchHole(t, uint64(st.PunchHole.GPA), uint64(st.PunchHole.Size))
	case st.MemslotDelete != nil:
		td := rn.tdOf(st.MemslotDelete.TD)
		if err := td.m.DeleteSlot(t, st.MemslotDelete.Slot); err != nil {
			return err
		}
		s := td.cfg.SlotLayout()[st.MemslotDelete.Slot]
		td.g.Forget(s.GPA, s.Size)
		return nil
	case st.MemoryTypeChange != nil:
		r := st.MemoryTypeChange
		return rn.tdOf(r.TD).m.MemtypeChange(t, uint64(r.GPA), uint64(r.Size))
	case st.MMUNotifier != nil:
		r := st.MMUNotifier
		return rn.tdOf(r.TD).m.MMUNotifier(t, uint64(r.GPA), uint64(r.Size))
	case st.MemoryFailure != nil:
		// The guest is not told: its next access gets EHWPOISON (the
		// VMM would inject a machine check).
		return rn.tdOf(st.MemoryFailure.TD).m.MemoryFailure(t, uint64(st.MemoryFailure.GPA))
	case st.Teardown != nil:
		return rn.teardown(t, rn.tdOf(st.Teardown.TD))
	}
	// parallel: each sub-step on its own thread
	g := sched.NewGroup(t, "parallel steps done")
	for k := range st.Parallel {
		sub := &st.Parallel[k]
		th := g.Go(fmt.Sprintf("step%d.%d", idx, k), func(pt *sched.Thread) error {
			err := rn.step(pt, sub, idx*64+k+1)
			return rn.matchExpected(sub, fmt.Sprintf("timeline[%d].parallel[%d]", idx, k), err)
		})
		rn.nameThread(th.ID(), fmt.Sprintf("step%d.%d", idx, k))
	}
	return g.Wait()
}

// boot accepts memory at boot: all of it (eager) or the first upfront
// bytes (lazy), each vCPU a share, on 2 MiB boundaries where it can.
func (rn *runner) boot(t *sched.Thread, b *Boot) error {
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

// acceptOffsets accepts RAM offsets [lo, lo+n), memslot by memslot.
func (rn *runner) acceptOffsets(t *sched.Thread, g *guest.Guest, v *tdx.VCPU, lo, n uint64) error {
	for _, r := range g.RAM() {
		if n == 0 {
			return nil
		}
		if lo >= r.Size {
			lo -= r.Size
			continue
		}
		k := min(n, r.Size-lo)
		if err := g.AcceptRange(t, v, r.GPA+lo, k); err != nil {
			return err
		}
		n -= k
		lo = 0
	}
	return nil
}

// touch reads (and writes) pages picked by the pattern; touch k runs on
// vCPU k mod n.
func (rn *runner) touch(t *sched.Thread, w *Touch, idx int) error {
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

// convert converts ranges to shared (and back), range k on vCPU k mod n.
func (rn *runner) convert(t *sched.Thread, c *Convert, idx int) error {
	td := rn.tdOf(c.TD)
	ranges, err := rn.placeRanges(td, c, idx)
	if err != nil {
		return err
	}
	size := uint64(c.Size)
	back, use := c.Back == nil || *c.Back, c.Use == nil || *c.Use
	nv := len(td.m.VCPUs)
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

// balloon gives the top of guest RAM back to the host: the guest converts
// it to shared in 2 MiB units (vCPUs in turn), then the VMM discards it.
func (rn *runner) balloon(t *sched.Thread, b *Balloon) error {
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

// teardown tears a TD down and keeps what it measured.
func (rn *runner) teardown(t *sched.Thread, td *tdRun) error {
	m := td.m
	td.torn = true
	if m == nil {
		return nil
	}
	if b, why := m.VM.Bugged(); b {
		td.bugged = why
	}
	td.mappedEnd = m.TD.MMU().Stats().Mapped[1]
	err := m.Teardown(t)
	td.mmuStats, td.tdStats, td.vmmStats = m.TD.MMU().Stats(), m.TD.Stats(), m.Stats()
	return err
}

// hostile runs a hostile guest on every vCPU of the TD at once; what the
// host answered is counted in the report. Only a host-side failure is an
// error.
func (rn *runner) hostile(t *sched.Thread, h *Hostile, idx int) error {
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
