package bench

import (
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"
)

// Config picks the sizes of a `tdxsim bench` run.
type Config struct {
	// Quick divides every size by 16 (for tests and a first look).
	Quick bool
	// Scale adds the scale targets: a 64 GiB TD accepted at 4K and a
	// 1 TiB TD accepted at 2M, each with its wall time and peak RSS.
	Scale bool
	// Progress, if set, is told the name of each figure before it runs.
	Progress func(name string)
}

// Run measures every figure, one after another, in this process.
func Run(cfg Config) (*Report, error) {
	div := uint64(1)
	if cfg.Quick {
		div = 16
	}
	rep := &Report{Cores: runtime.NumCPU(), Results: []Result{}}
	type step struct {
		name string
		run  func() (Result, error)
		soft bool // a failure is a note, not an error (no /dev/kvm)
	}
	steps := []step{
		{"fault_4k", func() (Result, error) { return Faults(Options{MemBytes: 1 << 30 / div, Parallel: true}) }, false},
		{"fault_2m", func() (Result, error) { return Faults(Options{MemBytes: 64 << 30 / div, Huge: true, Parallel: true}) }, false},
		{"convert_4k_in_2m", func() (Result, error) { return Convert4KIn2M(int(2048 / div)) }, false},
		{"build_64m", func() (Result, error) { return Build(64 << 20) }, false},
		{"teardown_per_gib", func() (Result, error) { return Teardown(int(max(4/div, 1)), false) }, false},
		{"sched_switch", func() (Result, error) { return SchedSwitch(int(1_000_000 / div)) }, false},
		{"fault_4k_2vcpus", func() (Result, error) { return Scaling(1 << 30 / div) }, false},
		{"checks_overhead", ChecksOverhead, false},
		{"real_kvm_fault_4k", func() (Result, error) { return RealKVMFault4K(256 << 20 / div) }, true},
	}
	if cfg.Scale {
		steps = append(steps,
			step{"scale_64GiB_at_4K", func() (Result, error) { return Scale(64<<30/div, false) }, false},
			step{"scale_1TiB_at_2M", func() (Result, error) { return Scale(1<<40/div, true) }, false})
	}
	for _, st := range steps {
		if cfg.Progress != nil {
			cfg.Progress(st.name)
		}
		r, err := st.run()
		if err != nil {
			if !st.soft {
				return rep, fmt.Errorf("bench %s: %w", st.name, err)
			}
			r = Result{Name: st.name, Note: "not measured: " + err.Error()}
		}
		if r.Name == "" {
			r.Name = st.name
		}
		rep.Results = append(rep.Results, r)
	}
	return rep, nil
}

// Result returns the figure named name.
func (r *Report) Result(name string) (Result, bool) {
	for _, x := range r.Results {
		if x.Name == name {
			return x, true
		}
	}
	return Result{}, false
}

// WriteText prints the report as a table, then the model's 4K fault rate
// over the real kernel's.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "cores: %d\n\n", r.Cores)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "figure\tops/s\tbytes/page\t")
	for _, x := range r.Results {
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f\t\n", x.Name, x.OpsPerSec, x.BytesPerPage)
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
	model, ok1 := r.Result("fault_4k")
	real, ok2 := r.Result("real_kvm_fault_4k")
	if ok1 && ok2 && real.OpsPerSec > 0 {
		fmt.Fprintf(w, "\nmodel fault_4k / real_kvm_fault_4k: %.2fx\n", model.OpsPerSec/real.OpsPerSec)
	}
}
