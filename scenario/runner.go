package scenario

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/sched"
)

// Runner is a run its caller steps, in the shape of raft's RawNode: the
// model runs on simulated threads under its scheduler, and the VMM
// thread parks at every step boundary (after the build and after each
// timeline step) until the caller asks for the next step. While it is
// parked no simulated thread runs, so View's state holds still.
//
//	r, err := scenario.Start(f, o)
//	for r.More() {
//		r.Next()
//		v := r.View() // the state after the step
//	}
//	rep, err := r.Report() // teardown, end-of-run checks, the report
type Runner struct{ rn *runner }

// stepping is the runner's side of the caller-driven stepping.
type stepping struct {
	resume chan struct{} // caller -> VMM thread: go on
	parked chan struct{} // VMM thread -> caller: at a boundary
	done   chan struct{} // closed when the scheduler returned
	// set by the VMM thread before it parks
	at      string
	err     error // the step's error (the run stops there)
	next    int   // timeline index the next Next runs
	stopped bool  // the build or a step failed: no more steps
	// set by the caller before it resumes
	quit bool
	// after done
	runErr, schedErr error
	freeBefore       int64
	result           *report.Run
	resultErr        error
	reported         bool
}

// StepView is the state at one step boundary. World is live model state:
// read it only before the next call to Next or Report.
type StepView struct {
	At    string            // "build", "timeline[3] (convert)", "teardown, end checks"
	World check.World       // the TDs not torn down
	Calls map[string]uint64 // SEAMCALLs and TDCALLs so far, by leaf
	// Violations is how many violations the run has reported so far.
	Violations int
	// SchedulerSteps is how many scheduling decisions were made so far.
	SchedulerSteps uint64
	// Err is the error the step stopped the run with (nil when it
	// completed, or met its expect_error).
	Err error
}

// Start builds the host and the TDs and returns the runner parked after
// the build (View's At is "build"). The error is a setup failure (the
// host could not be built); a TD that fails to build stops the run at
// the build boundary instead (View().Err).
func Start(f *File, o Options) (*Runner, error) {
	rn := &runner{f: f, o: o, seed: *f.Seed, count: event.NewCounter(), checks: map[string][2]int{}, hostileOps: map[string]int64{}}
	if o.Seed != nil {
		rn.seed = *o.Seed
	}
	costs := f.Costs()
	rn.clock = report.NewClock(costs)
	rn.resp = check.NewResponses()
	var sink event.Sink = event.Tee{rn.count, rn.clock, rn.resp}
	if o.Sink != nil {
		sink = event.Tee{rn.count, rn.clock, rn.resp, o.Sink}
	}
	name := f.Name
	if name == "" {
		name = f.Path
	}
	rn.r = &report.Run{Scenario: name, Kernel: f.Scenario.Kernel, Seed: rn.seed, Violations: []string{}, Expectations: []report.Expectation{}}
	if err := rn.setup(sink); err != nil {
		return nil, err
	}
	mode := sched.Deterministic
	if o.Parallel {
		mode = sched.Parallel
	}
	if mode == sched.Deterministic && o.Strategy != nil {
		rn.s = sched.NewWith(o.Strategy, sink)
	} else if mode == sched.Deterministic {
		rn.s = sched.NewWith(f.Schedule.strategy(rn.seed), sink)
	} else {
		rn.s = sched.New(mode, rn.seed, sink)
	}
	if o.Coverage != nil {
		rn.host.Mod.RecordTransitions()
	}
	if o.TraceLocks {
		rn.s.TraceLocks()
	}
	rn.resume, rn.parked, rn.done = make(chan struct{}), make(chan struct{}), make(chan struct{})
	rn.freeBefore = int64(rn.host.Mem.FreePages())
	th := rn.s.Go("vmm", func(t *sched.Thread) { rn.runErr = rn.main(t) })
	rn.nameThread(th.ID(), "vmm")
	go func() {
		rn.schedErr = rn.s.Run()
		close(rn.done)
	}()
	rn.wait()
	return &Runner{rn}, nil
}

// park is the VMM thread at a boundary: it records where it is and blocks
// until the caller resumes it. Holding the scheduler's baton (or, in
// parallel mode, with every other simulated thread finished), nothing
// else in the model runs meanwhile.
func (rn *runner) park(t *sched.Thread, at string, err error, next int) {
	t.SyncSteps() // the caller's View reads Steps while this thread waits
	rn.at, rn.err, rn.next = at, err, next
	rn.stopped = rn.stopped || err != nil
	rn.parked <- struct{}{}
	<-rn.resume
}

// wait blocks the caller until the VMM thread parks or the run ends.
func (rn *runner) wait() {
	select {
	case <-rn.parked:
	case <-rn.done:
	}
}

func (rn *runner) ended() bool {
	select {
	case <-rn.done:
		return true
	default:
		return false
	}
}

// More reports whether a timeline step is left to run.
func (r *Runner) More() bool {
	rn := r.rn
	return !rn.ended() && !rn.stopped && rn.next < len(rn.f.Timeline)
}

// Next runs the next timeline step and its per-step checks, and reports
// whether more steps are left. Without a step left it does nothing.
func (r *Runner) Next() bool {
	if !r.More() {
		return false
	}
	r.rn.resume <- struct{}{}
	r.rn.wait()
	return r.More()
}

// View is the state at the current boundary (after Report: at the end,
// with every TD torn down).
func (r *Runner) View() StepView {
	rn := r.rn
	at, err := rn.at, rn.err
	if rn.reported {
		at, err = "teardown, end checks", nil
	}
	return StepView{At: at, World: rn.world(), Calls: rn.count.Calls(), Violations: len(rn.r.Violations),
		SchedulerSteps: rn.s.Steps(), Err: err}
}

// ViolationsSince returns the violations reported after the first n.
func (r *Runner) ViolationsSince(n int) []string {
	vs := r.rn.r.Violations
	return append([]string(nil), vs[min(n, len(vs)):]...)
}

// Report skips the steps left, tears down every TD not torn down, runs
// the end-of-run checks and returns the report. The error is
// ErrRun-wrapped when a step failed unexpectedly (the report's Error
// says which). Calling it again returns the same.
func (r *Runner) Report() (*report.Run, error) {
	rn := r.rn
	if rn.reported {
		return rn.result, rn.resultErr
	}
	if !rn.ended() {
		rn.quit = true
		rn.resume <- struct{}{}
		<-rn.done
	}
	rn.clock.End()
	leaked := rn.freeBefore - int64(rn.host.Mem.FreePages())
	rn.finish(leaked)
	rn.fillCoverage()
	rn.result, rn.resultErr = rn.r, rn.outcome()
	rn.classify(rn.resultErr)
	rn.reported = true
	return rn.result, rn.resultErr
}

// outcome applies expect.error to how the run ended.
func (rn *runner) outcome() error {
	f := rn.f
	runErr := rn.runErr
	if rn.schedErr != nil {
		runErr = errors.Join(runErr, rn.schedErr)
	}
	if runErr != nil {
		rn.r.Error = runErr.Error()
		if f.Expect.Error != "" && strings.Contains(runErr.Error(), f.Expect.Error) {
			rn.expect("error "+f.Expect.Error, true, runErr.Error())
			return nil
		}
		if f.Expect.Error != "" {
			rn.expect("error "+f.Expect.Error, false, "the run stopped with another error")
		}
		return fmt.Errorf("%w: %w", ErrRun, runErr)
	}
	if f.Expect.Error != "" {
		rn.expect("error "+f.Expect.Error, false, "the run completed without an error")
	}
	return nil
}
