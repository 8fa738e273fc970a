package main

import (
	"fmt"
	"io"
	"sync/atomic"

	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/scenario"
)

// drive runs f to the end through a scenario.Runner: bar (if not nil)
// shows the SEAMCALLs made so far, live, and the steps done, tr (if not nil) writes a line per boundary (the
// failed step's and the end's included), and each (if not nil) sees the
// state at every boundary a step completed at (the build, then every
// timeline step that did not stop the run).
func drive(f *scenario.File, o scenario.Options, bar *progress, tr *tracer, each func(scenario.StepView)) (*report.Run, error) {
	total := len(f.Timeline) + 2                             // build and teardown count as one step each
	stepper, _ := o.Sink.(interface{ BeforeStep(step int) }) // a trace window
	var status atomic.Pointer[string]
	if bar != nil {
		m := &seamcallMeter{next: o.Sink}
		o.Sink = m
		s := stepStatus(0, total, "")
		status.Store(&s)
		bar.poll(func() (int64, string) { return m.n.Load(), *status.Load() })
		defer bar.finish()
	}
	r, err := scenario.Start(f, o)
	if err != nil {
		return nil, err
	}
	done := 0
	boundary := func() {
		done++
		v := r.View()
		if stepper != nil {
			stepper.BeforeStep(done - 1) // after the build, timeline[0]; after the last, the teardown
		}
		if bar != nil {
			s := stepStatus(min(done, total), total, "done, last "+v.At)
			status.Store(&s)
		}
		if v.At == "" || v.At == "build" && v.Err != nil {
			return // a build that failed (or never finished) has no line; the end's says why
		}
		tr.line(r, v)
		if v.Err == nil && each != nil {
			each(v)
		}
	}
	boundary()
	for r.More() {
		r.Next()
		boundary()
	}
	rep, err := r.Report()
	tr.line(r, r.View())
	return rep, err
}

// tracer writes tdxsim replay's line per step: the step, its SEAMCALLs
// and TDCALLs, the scheduling decisions it took, the error it stopped
// with, and the violations found since the last line.
type tracer struct {
	w          io.Writer
	calls      uint64
	steps      uint64
	violations int
}

func (tr *tracer) line(r *scenario.Runner, v scenario.StepView) {
	if tr == nil {
		return
	}
	var calls uint64
	for _, n := range v.Calls {
		calls += n
	}
	fmt.Fprintf(tr.w, "%-32s %8d calls  %7d scheduler steps", v.At, calls-tr.calls, v.SchedulerSteps-tr.steps)
	tr.calls, tr.steps = calls, v.SchedulerSteps
	vs := r.ViolationsSince(tr.violations)
	tr.violations = v.Violations
	switch {
	case v.Err != nil:
		fmt.Fprintf(tr.w, "  stopped: %v\n", v.Err)
	case len(vs) == 0:
		fmt.Fprintf(tr.w, "  checks ok\n")
	default:
		fmt.Fprintf(tr.w, "  %d violations\n", len(vs))
	}
	for _, s := range vs {
		fmt.Fprintf(tr.w, "    %s\n", s)
	}
}
