package scenario

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/guest"
	"github.com/tdxsim/tdxsim/inject"
	"github.com/tdxsim/tdxsim/kernel"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxmodule"
	"github.com/tdxsim/tdxsim/vmm"
)

// Options are the run-time choices of one run (command-line flags).
type Options struct {
	// Seed overrides the scenario's seed when non-nil.
	Seed *uint64
	// Sink also receives every event (traces, tests); nil for none.
	Sink event.Sink
	// Parallel runs the simulated threads on real goroutines (sched.Parallel)
	// instead of the seeded deterministic scheduler: faster on many cores,
	// but the interleaving (and so some counts) varies from run to run.
	Parallel bool
	// NoStepChecks skips the cross-layer walks of the check package after
	// each step (what the layers report themselves, lock order and the
	// guest's reads, is still counted): for measuring what they cost.
	NoStepChecks bool
	// TraceLocks makes every lock acquire and release an event (for a
	// trace's lock holds), not only the waits.
	TraceLocks bool
	// Coverage, if set, receives what the run exercised (S-EPT
	// transitions, lock-order edges) when Report returns.
	Coverage *Coverage
	// Strategy, if set, replaces the scenario's schedule: (its strategy)
	// on the deterministic scheduler (tdxsim explore drives each run).
	Strategy sched.Strategy
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
	// firmware is what the build did with each firmware section.
	firmware []vmm.SectionLoad
	torn     bool
	septPeak int
	charged  uint64 // peak bytes charged to the VM
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
	// resp traces the kernel's responses to injected faults.
	resp *check.Responses
	// phase is where the run is ("build", "timeline[3] (convert)",
	// "teardown"): what is reported after the scheduler stopped (a
	// deadlock, say) is attributed to it.
	phase string
	// the caller-driven stepping (runner.go)
	stepping
	// peaks sampled at step boundaries
	pamtPeak    uint64
	pamtStatic  uint64
	pamtDynPeak uint64
	dpamtPeak   int
	ptPeak      int64
}

// Run runs a loaded scenario to the end and returns its report. The
// error is ErrRun-wrapped when a step failed unexpectedly (the report's
// Error says which), or a setup failure (the host could not be built).
func Run(f *File, o Options) (*report.Run, error) {
	r, err := Start(f, o)
	if err != nil {
		return nil, err
	}
	for r.Next() {
	}
	return r.Report()
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
	alr, err := tdx.ParseAcceptLevelRule(pol.AcceptLevel)
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
				ExternalSPTFromPrealloc: pol.ExternalSPTCache == "tdx_prealloc", TerminateVM: pol.Teardown == "terminate_vm",
				PAMTCachePages: f.Profile().PAMTCachePages, AcceptLevel: alr}}
		// The in-place series' RFC v5 set-up flow: image written into the
		// shared guest_memfd, PRESERVE to private, populated from itself.
		cfg.PopulateInPlace = cfg.InPlace && f.Profile().HasContentMode("preserve")
		cfg.TD.OptionalSource = cfg.PopulateInPlace
		for _, m := range f.memslots(i) {
			cfg.Slots = append(cfg.Slots, vmm.Slot{GPA: uint64(m.GPA), Size: uint64(m.Size)})
		}
		if f.firmwareOf(i) != nil {
			cfg.MemBytes = 0 // RAM and flash
			for _, s := range cfg.Slots {
				cfg.MemBytes += s.Size
			}
		}
		cfgs = append(cfgs, cfg)
		rn.tds = append(rn.tds, &tdRun{spec: spec, cfg: cfg})
	}
	kcfg := kvm.DefaultConfig()
	kcfg.SplitFolioFirst = pol.SplitOrder == "folio_first"
	if f.Profile().Has(kernel.MemtypeZapNone().Flag) {
		kcfg.MemtypeZap = kvm.MemtypeZapNone
	}
	kcfg.GmemContentModes = len(f.Profile().ContentModes) > 0
	rn.host, err = vmm.NewHost(vmm.HostConfig{Bytes: uint64(f.Host.Memory), DynamicPAMT: *pol.DynamicPAMT,
		Packages: f.Host.Packages, Allow1GAug: f.Host.TDX.MaxLevel == "1G",
		NoEnhancedDemote: f.Host.TDX.EnhancedDemote != nil && !*f.Host.TDX.EnhancedDemote, KVM: &kcfg, TDs: cfgs,
		TDX: tdx.HostConfig{PAMTPutUnderLock: f.Profile().PAMTPutUnderLock}}, sink)
	if err != nil {
		return err
	}
	ic, err := f.InjectConfig()
	if err != nil || !ic.Any() {
		return err
	}
	ic.Seed = rn.seed
	rn.inj = inject.New(ic)
	mod := rn.host.Mod
	rn.inj.SetRunnable(func(tdr addr.PFN) bool {
		info, ok := mod.TD(tdr)
		return ok && info.OpState == tdxmodule.OpStateRunnable
	})
	rn.host.Mod.SetInjector(rn.inj.SEAMCALL)
	rn.host.NoVCPUs = rn.inj.NoVCPUs
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

// main is the VMM thread: build every TD, run the timeline, tear down.
// It parks at every step boundary until the caller resumes it.
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
	rn.park(t, "build", stop, 0)
	for i := range rn.f.Timeline {
		if stop != nil || rn.quit {
			break // the build failed or the caller is done: tear down what was built
		}
		st := &rn.f.Timeline[i]
		at := fmt.Sprintf("timeline[%d] (%s)", i, st.Kind())
		rn.phase = at
		rn.clock.Begin(fmt.Sprintf("%d %s", i, st.Kind()))
		err := rn.step(t, st, i)
		rn.conversionProgress(st, err)
		if err = rn.matchExpected(st, fmt.Sprintf("timeline[%d]", i), err); err != nil {
			stop = fmt.Errorf("%s: %w", at, err)
			rn.newReports(at)
			rn.park(t, at, err, i+1)
			break
		}
		rn.sample(at)
		rn.park(t, at, nil, i+1)
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
	return stop
}

// conversionProgress checks, after a guest workload (or a parallel group
// with one), that none of its conversions ended with the guest giving up
// on TDVMCALL_RETRY.
func (rn *runner) conversionProgress(st *Step, err error) {
	var tds []string
	for _, m := range append([]Step{*st}, st.Members()...) {
		if m.GuestWorkload() {
			tds = append(tds, m.TDName())
		}
	}
	if len(tds) == 0 {
		return
	}
	var why []string
	for _, name := range tds {
		if td := rn.tdOf(name); td != nil && td.m != nil && td.m.TD.LastMapGPARetry() != "" {
			why = append(why, td.spec.Name+": "+td.m.TD.LastMapGPARetry())
		}
	}
	rn.check(rn.phase, check.ConversionProgress, check.ConversionProgressAfter(err, why)...)
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

// build creates a TD, loads and measures its image (or its firmware),
// finalizes it and makes its guest.
func (rn *runner) build(t *sched.Thread, td *tdRun, i int) error {
	m, err := vmm.Create(t, rn.host, td.cfg)
	if err != nil {
		return err
	}
	td.m = m
	if fw := rn.f.firmwareOf(i); fw != nil {
		ram, reserved, err := rn.loadFirmware(t, td, fw)
		if err != nil {
			return err
		}
		if td.mrtd, err = m.Finalize(t); err != nil {
			return err
		}
		td.g, err = guest.New(m.TD, m.VCPUs, guest.Config{RAM: ram, MaxAcceptLevel: addr.Level2M, Reserved: reserved})
		return err
	}
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
	if b, why := m.VM.Bugged(); b && td.bugged == "" {
		td.bugged = why // a KVM_BUG_ON of the teardown itself (a failed REMOVE or RECLAIM)
	}
	td.mmuStats, td.tdStats, td.vmmStats = m.TD.MMU().Stats(), m.TD.Stats(), m.Stats()
	return err
}
