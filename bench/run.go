package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// DefaultRounds is how many times `tdxsim bench` measures each figure.
const DefaultRounds = 5

// Spread names what a Result's Min and Max are.
const Spread = "min and max over the rounds"

// Figure is one thing a run measures, once per round.
type Figure struct {
	Name    string
	Measure func() (Result, error)
	// Real marks a figure of the real kernel: where it cannot be measured
	// (no /dev/kvm) the report says so instead of the run failing.
	Real bool
}

// Config picks the sizes of a `tdxsim bench` run.
type Config struct {
	// Quick divides every size by 16 (for tests and a first look).
	Quick bool
	// Scale adds the scale targets: TDs of 64 GiB and 256 GiB accepted
	// at 4K and of 1 TiB and 4 TiB accepted at 2M, each with its wall
	// time and peak RSS.
	Scale bool
	// Rounds is how many times each figure is measured (DefaultRounds
	// when 0).
	Rounds int
	// Progress, if set, is told the name and round (from 1) of each
	// measurement before it runs.
	Progress func(name string, round, rounds int)
	// Figures replaces the figures Figures(Quick, Scale) would measure
	// (tests give a fake measurer here).
	Figures []Figure
}

// The figures the ratios are taken between.
const (
	nameFault4K  = "fault_4k"
	nameRealKVM  = "real_kvm_fault_4k"
	nameTwoVCPUs = "fault_4k_2vcpus"
)

// Figures lists what `tdxsim bench` measures, in the order of a round: the
// model's 4K fault, then the real kernel's guest_memfd fault-in and the
// two-vCPU fault path right after it, so that the figures the ratios
// compare are measured next to each other in time, then the rest.
func Figures(quick, scale bool) []Figure {
	div := uint64(1)
	if quick {
		div = 16
	}
	figs := []Figure{
		{Name: nameFault4K, Measure: func() (Result, error) { return Faults(Options{MemBytes: 1 << 30 / div, Parallel: true}) }},
		{Name: nameRealKVM, Measure: func() (Result, error) { return RealKVMFault4K(256 << 20 / div) }, Real: true},
		{Name: nameTwoVCPUs, Measure: func() (Result, error) { return TwoVCPUs(1 << 30 / div) }},
		{Name: "fault_2m", Measure: func() (Result, error) { return Faults(Options{MemBytes: 64 << 30 / div, Huge: true, Parallel: true}) }},
		{Name: "convert_4k_in_2m", Measure: func() (Result, error) { return Convert4KIn2M(int(2048 / div)) }},
		{Name: "build_64m", Measure: func() (Result, error) { return Build(64 << 20) }},
		{Name: "teardown_per_gib", Measure: func() (Result, error) { return Teardown(int(max(4/div, 1)), false) }},
		{Name: "sched_switch", Measure: func() (Result, error) { return SchedSwitch(int(1_000_000 / div)) }},
		{Name: "checks_overhead", Measure: ChecksOverhead},
	}
	if scale {
		figs = append(figs,
			Figure{Name: "scale_64GiB_at_4K", Measure: func() (Result, error) { return Scale(64<<30/div, false) }},
			Figure{Name: "scale_1TiB_at_2M", Measure: func() (Result, error) { return Scale(1<<40/div, true) }},
			Figure{Name: "scale_256GiB_at_4K", Measure: func() (Result, error) { return Scale(256<<30/div, false) }},
			Figure{Name: "scale_4TiB_at_2M", Measure: func() (Result, error) { return Scale(4<<40/div, true) }})
	}
	return figs
}

// Run measures every figure cfg.Rounds times in this process, round
// after round (every figure once per round, so model and real-kernel
// measurements alternate and share whatever the machine was doing),
// and reports each figure's median and spread, and the two ratios of
// medians: fault_4k's vs_real_kvm and fault_4k_2vcpus's vs_one_vcpu.
func Run(cfg Config) (*Report, error) {
	rounds := cfg.Rounds
	if rounds <= 0 {
		rounds = DefaultRounds
	}
	figs := cfg.Figures
	if figs == nil {
		figs = Figures(cfg.Quick, cfg.Scale)
	}
	m := ThisMachine()
	rep := &Report{Machine: m, Cores: m.Cores, Rounds: rounds, Spread: Spread, Results: []Result{}}
	measured := make([][]Result, len(figs))
	failed := make([]error, len(figs)) // a Real figure that could not be measured
	for round := 1; round <= rounds; round++ {
		for i, f := range figs {
			if failed[i] != nil {
				continue // no /dev/kvm does not come back between rounds
			}
			if cfg.Progress != nil {
				cfg.Progress(f.Name, round, rounds)
			}
			r, err := f.Measure()
			if err != nil {
				if !f.Real {
					return rep, fmt.Errorf("bench %s (round %d): %w", f.Name, round, err)
				}
				failed[i] = err
				continue
			}
			if r.Name == "" {
				r.Name = f.Name
			}
			measured[i] = append(measured[i], r)
		}
	}
	for i, f := range figs {
		var r Result
		switch {
		case len(measured[i]) > 0:
			r = summarize(measured[i])
			if failed[i] != nil { // measured, then failed: say so beside the figures it has
				r.Note = joinNote(r.Note, fmt.Sprintf("%d of %d rounds failed: %v", rounds-len(measured[i]), rounds, failed[i]))
			}
		default:
			r = Result{Name: f.Name, Note: "not measured: " + failed[i].Error()}
		}
		rep.Results = append(rep.Results, r)
	}
	rep.addRatios()
	return rep, nil
}

// addRatios sets fault_4k's vs_real_kvm (or its real note) and
// fault_4k_2vcpus's vs_one_vcpu from the medians of this run.
func (r *Report) addRatios() {
	model, ok := r.result(nameFault4K)
	if !ok {
		return
	}
	if real, ok := r.result(nameRealKVM); ok {
		if model.VsRealKVM = ratio(*model, *real); model.VsRealKVM == nil {
			model.Real = real.Note
		}
	}
	if two, ok := r.result(nameTwoVCPUs); ok {
		two.VsOneVCPU = ratio(*two, *model)
	}
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// result is the figure named name, to be modified in place.
func (r *Report) result(name string) (*Result, bool) {
	for i := range r.Results {
		if r.Results[i].Name == name {
			return &r.Results[i], true
		}
	}
	return nil, false
}

// Result returns the figure named name.
func (r *Report) Result(name string) (Result, bool) {
	if x, ok := r.result(name); ok {
		return *x, true
	}
	return Result{}, false
}

// WriteText prints the machine, a table of every figure's median rate
// with its spread, bytes per page and allocations per operation, what
// each figure's operation is, and the two ratios.
func (r *Report) WriteText(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "machine: %s, %d cores, GOMAXPROCS %d, %s %s", m.CPU, m.Cores, m.GOMAXPROCS, m.Go, m.Platform)
	if m.Kernel != "" {
		fmt.Fprintf(w, ", kernel %s", m.Kernel)
	}
	fmt.Fprintf(w, ", %s\n", m.KVM)
	fmt.Fprintf(w, "rounds: %d, interleaved; each rate is the median, the spread the %s\n\n", r.Rounds, Spread)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "figure\tmedian\tspread (min..max)\tbytes/page\tallocs/op\t")
	for _, x := range r.Results {
		if x.Median == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t\n", x.Name)
			continue
		}
		bpp, apo := "-", "-"
		if x.perPage {
			bpp = fmt.Sprintf("%.1f", x.BytesPerPage)
		}
		if x.perOp {
			apo = fmt.Sprintf("%.3f", x.AllocsPerOp)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", x.Name, HumanRate(*x.Median), HumanSpread(*x.Median, *x.Min, *x.Max), bpp, apo)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, x := range r.Results {
		if x.Unit != "" || x.Note != "" {
			fmt.Fprintf(w, "%s: %s", x.Name, x.Unit)
			if x.Note != "" {
				fmt.Fprintf(w, " (%s)", x.Note)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w)
	if model, ok := r.Result(nameFault4K); ok {
		if model.VsRealKVM != nil {
			fmt.Fprintf(w, "%s vs_real_kvm: %.2fx (median model rate / median %s rate, this run)\n", nameFault4K, *model.VsRealKVM, nameRealKVM)
		} else if model.Real != "" {
			fmt.Fprintf(w, "%s vs_real_kvm: none (%s)\n", nameFault4K, model.Real)
		}
	}
	if two, ok := r.Result(nameTwoVCPUs); ok && two.VsOneVCPU != nil {
		fmt.Fprintf(w, "%s vs_one_vcpu: %.2fx (median two-vCPU rate / median %s rate, this run)\n", nameTwoVCPUs, *two.VsOneVCPU, nameFault4K)
	}
}
