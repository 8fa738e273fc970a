package fuzz

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/guest"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/scenario"
)

// StepError is the invariant a run breaks when a step fails that the
// scenario did not expect to fail and no injected fault explains: the
// model refused something a valid scenario asked for.
const StepError = check.StepCompletes

// Outcome is one scenario's run.
type Outcome struct {
	Steps    int    // timeline steps (parallel groups count their members)
	Schedule string // the interleaving (sched.ScheduleHash)
	// Class is how the run ended: check.ClassClean, ClassKernelResponse
	// or ClassViolation.
	Class string
	// Broken lists the invariants violated, sorted; empty unless Class is
	// a violation.
	Broken []string
	// Responses lists the kinds of kernel response to injected faults the
	// run ended with, sorted (check.RespKVMBugOn, ...).
	Responses []string
	Report    *report.Run
	// Cover is what the run exercised (nil when it could not start).
	Cover *scenario.Coverage
}

// RunOne runs f under the deterministic scheduler with every check on.
func RunOne(f *scenario.File) Outcome {
	return RunWith(f, scenario.Options{})
}

// RunWith is RunOne with opts (its Coverage is set here).
func RunWith(f *scenario.File, opts scenario.Options) Outcome {
	cov := &scenario.Coverage{}
	opts.Coverage = cov
	r, err := scenario.Run(f, opts)
	o := Outcome{Steps: countSteps(f.Timeline), Report: r}
	if r == nil {
		o.Class, o.Broken = check.ClassViolation, []string{StepError}
		return o
	}
	o.Schedule = r.Schedule
	o.Cover = cov
	// The report classified the run (check.Classify): a step that failed
	// because of an injected fault (KVM's -ENOMEM to the faulting path, the
	// EIO of a VM an injected fault killed) is the kernel's answer, not a
	// finding.
	o.Class = r.Outcome
	o.Responses = slices.Sorted(maps.Keys(r.KernelResponses))
	if o.Class == check.ClassViolation {
		o.Broken = slices.Sorted(maps.Keys(r.Checks.Failed))
		if len(o.Broken) == 0 && err != nil {
			o.Broken = []string{StepError}
		}
	}
	return o
}

func countSteps(steps []scenario.Step) int {
	n := 0
	for _, s := range steps {
		if m := s.Members(); len(m) > 0 {
			n += countSteps(m)
		} else {
			n++
		}
	}
	return n
}

// Config is a campaign.
type Config struct {
	Seed     uint64        // first seed
	Runs     int           // scenarios to run (0: until Duration)
	Duration time.Duration // stop after this long (0: until Runs)
	Kernel   string        // kernel profile of every scenario ("" the default)
	Policies [][2]string   // overrides applied to every scenario
	Inject   [][2]string   // fault injection set in every scenario (--inject)
	Hostile  bool          // hostile guests (--hostile)
	Faults   string        // the generator's fault set (FaultSets; "" is FaultsMenu)
	// MaxMemory bounds each generated TD's memory (0: DefaultMaxMemory).
	MaxMemory uint64
	// Shard and Shards split the seed space: this campaign runs seeds
	// Seed+Shard, Seed+Shard+Shards, ... (Shards 0 or 1: every seed).
	Shard, Shards int
	Out           string // directory for reproducers ("" writes none)
	// ShrinkRuns bounds the runs one shrink may make (0: 400).
	ShrinkRuns int
	// Workers runs this many scenarios at once (0: runtime.NumCPU()).
	// Outcomes are merged in seed order, so the summary, findings and
	// reproducers are the same for any Workers (timings aside).
	Workers int
	// Schedules runs each generated scenario under this many schedules,
	// each a distinct scheduler seed (0: 1).
	Schedules int
	// Strategy is the scheduler strategy: "random" ("" too) or "pct".
	Strategy string
	// Depth is PCT's bug depth d (d-1 priority change points; 0: 3).
	Depth int
	// StopAtFinding ends the campaign after the scenario of its first
	// finding (for measuring the time to find a bug).
	StopAtFinding bool
	// Progress, if set, is called after each run with the runs so far.
	Progress func(runs int)
	// Live, if set, is called after each run with the summary so far
	// (runs, interleavings, violations), on the campaign's goroutine; it
	// must not keep the summary.
	Live func(sum *Summary)
}

// Summary is what a campaign found.
type Summary struct {
	Runs int `json:"runs"`
	// Schedules is the runs times the schedules each ran under.
	Schedules     int    `json:"schedules"`
	Strategy      string `json:"strategy"`
	Steps         int    `json:"steps"`
	Interleavings int    `json:"interleavings"`
	// Outcomes counts the schedules by how they ended: clean,
	// kernel_response, violation (check.Class*).
	Outcomes map[string]int `json:"outcomes"`
	// KernelResponses counts the schedules that ended in a kernel
	// response to an injected fault, by kind (one schedule may count
	// under several kinds).
	KernelResponses map[string]int `json:"kernel_responses"`
	Violations      map[string]int `json:"violations"` // schedules that broke each invariant
	Reproducers     []string       `json:"reproducers"`
	Traces          []string       `json:"traces,omitempty"` // Chrome traces of the reproducers (tdxsim fuzz --trace)
	Findings        []Finding      `json:"findings"`
	Seeds           [2]uint64      `json:"seeds"` // first and last seed run
	ElapsedMS       int64          `json:"elapsed_ms"`
	Kernel          string         `json:"kernel,omitempty"`
	Policies        []string       `json:"policies"`
	Inject          []string       `json:"inject"`
	// Faults is the generator's fault set (fuzz --faults).
	Faults string `json:"faults"`
	// GuestOps counts the hostile guests' operations (--hostile).
	GuestOps int64 `json:"hostile_guest_ops"`
	// GuestRefused counts those the host refused (a bad operand, a
	// range it would not convert, an exit to userspace): bad guest input.
	GuestRefused int64 `json:"hostile_guest_ops_refused"`
	// Injected counts the faults injected over the campaign, by kind.
	Injected map[string]uint64 `json:"injected"`
	// Workers is how many scenarios ran at once; RunsPerSec and
	// InterleavingsPerSec are Runs and Interleavings over the elapsed
	// wall time (shrinking included).
	Workers             int     `json:"workers"`
	RunsPerSec          float64 `json:"runs_per_sec"`
	InterleavingsPerSec float64 `json:"interleavings_per_sec"`
	// Coverage is what the campaign's runs exercised, out of what the
	// model has (shrinking runs aside).
	Coverage Coverage `json:"coverage"`
}

// Finding is one failing seed and what its shrunk reproducer is.
type Finding struct {
	Seed uint64 `json:"seed"`
	// ScheduleSeed is the scheduler seed of the failing schedule (the
	// reproducer pins it in schedule.seed).
	ScheduleSeed uint64   `json:"schedule_seed"`
	Broken       []string `json:"broken"`
	Steps        int      `json:"steps"`        // timeline steps of the generated scenario
	ShrunkSteps  int      `json:"shrunk_steps"` // and of the reproducer
	Reproducer   string   `json:"reproducer,omitempty"`
	FoundAfter   int64    `json:"found_after_ms"`
	// FoundAfterSchedules is the schedules run up to and including the
	// failing one, counted in seed order: the same for any machine, load
	// or worker count, where FoundAfter is wall time.
	FoundAfterSchedules int `json:"found_after_schedules"`
}

// Campaign runs generated scenarios until Runs or Duration, shrinking and
// writing a reproducer for the first failure of each invariant.
func Campaign(cfg Config) (*Summary, error) {
	start := time.Now()
	shards := max(cfg.Shards, 1)
	if cfg.Shard < 0 || cfg.Shard >= shards {
		return nil, fmt.Errorf("fuzz: shard %d of %d", cfg.Shard, shards)
	}
	if cfg.Runs <= 0 && cfg.Duration <= 0 {
		cfg.Runs = 100
	}
	if err := checkStrategy(cfg.Strategy); err != nil {
		return nil, fmt.Errorf("fuzz: %w", err)
	}
	if cfg.Depth <= 0 {
		cfg.Depth = scenario.DefaultPCTDepth
	}
	sum := &Summary{Kernel: cfg.Kernel, Outcomes: map[string]int{}, KernelResponses: map[string]int{}, Violations: map[string]int{}, Reproducers: []string{}, Findings: []Finding{}, Policies: []string{}, Inject: []string{}, Injected: map[string]uint64{}, Strategy: cfg.Strategy}
	if sum.Strategy == "" {
		sum.Strategy = "random"
	}
	if sum.Faults = cfg.Faults; sum.Faults == "" {
		sum.Faults = FaultsMenu
	}
	if err := CheckFaults(sum.Faults); err != nil {
		return nil, fmt.Errorf("fuzz: faults %w", err)
	}
	for _, p := range cfg.Policies {
		sum.Policies = append(sum.Policies, p[0]+"="+p[1])
	}
	for _, p := range cfg.Inject {
		sum.Inject = append(sum.Inject, p[0]+"="+p[1])
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	sum.Workers = workers
	seedOf := func(i int) uint64 { return cfg.Seed + uint64(cfg.Shard) + uint64(i)*uint64(shards) }
	res := newResults(cfg, seedOf, workers, max(cfg.Runs, 0))
	defer res.stop()
	schedules := map[string]bool{}
	reported := map[string]bool{}
	cover := newCoverSet()
	for i := 0; ; i++ {
		if cfg.Runs > 0 && i >= cfg.Runs || cfg.Duration > 0 && time.Since(start) >= cfg.Duration {
			break
		}
		seed := seedOf(i)
		runs, err := res.get(i)
		if err != nil {
			return sum, err
		}
		if i == 0 {
			sum.Seeds[0] = seed
		}
		sum.Seeds[1] = seed
		sum.Runs++
		sum.Steps += runs[0].o.Steps
		for _, r := range runs {
			cover.add(r.f, r.o.Cover)
			if err := cfg.merge(sum, seed, r, start, schedules, reported); err != nil {
				return sum, err
			}
		}
		sum.Interleavings = len(schedules)
		if cfg.Progress != nil {
			cfg.Progress(sum.Runs)
		}
		if cfg.Live != nil {
			cfg.Live(sum)
		}
		if cfg.StopAtFinding && len(sum.Findings) > 0 {
			break
		}
	}
	sum.Coverage = cover.summary()
	el := time.Since(start)
	sum.ElapsedMS = el.Milliseconds()
	if secs := el.Seconds(); secs > 0 {
		sum.RunsPerSec = float64(sum.Runs) / secs
		sum.InterleavingsPerSec = float64(sum.Interleavings) / secs
	}
	return sum, nil
}

// merge adds one schedule's run of the scenario of seed to the summary,
// shrinking and writing a reproducer for the first failure of each
// invariant.
func (cfg Config) merge(sum *Summary, seed uint64, r run, start time.Time, schedules, reported map[string]bool) error {
	f, o := r.f, r.o
	sum.Schedules++
	if o.Report != nil {
		for k, n := range o.Report.Injected {
			sum.Injected[k] += n
		}
		for what, n := range o.Report.Hostile {
			sum.GuestOps += n
			if guest.HostileRefused(what) {
				sum.GuestRefused += n
			}
		}
	}
	if o.Schedule != "" {
		schedules[fmt.Sprint(seed%1024, o.Schedule)] = true
	}
	if o.Class != "" {
		sum.Outcomes[o.Class]++
	}
	if o.Class == check.ClassKernelResponse {
		for _, k := range o.Responses {
			sum.KernelResponses[k]++
		}
	}
	for _, inv := range o.Broken {
		sum.Violations[inv]++
	}
	if len(o.Broken) > 0 && !reported[o.Broken[0]] {
		for _, inv := range o.Broken {
			reported[inv] = true
		}
		ss := seed
		if f.Schedule.Seed != nil {
			ss = *f.Schedule.Seed
		}
		fd := Finding{Seed: seed, ScheduleSeed: ss, Broken: o.Broken, Steps: o.Steps, FoundAfter: time.Since(start).Milliseconds(), FoundAfterSchedules: sum.Schedules}
		small := Shrink(f, o.Broken[0], cfg.ShrinkRuns)
		fd.ShrunkSteps = countSteps(small.Timeline)
		if cfg.Out != "" {
			path, err := writeReproducer(cfg.Out, seed, o.Broken[0], small)
			if err != nil {
				return &OutputError{Dir: cfg.Out, Err: err}
			}
			fd.Reproducer = path
			sum.Reproducers = append(sum.Reproducers, path)
		}
		sum.Findings = append(sum.Findings, fd)
	}
	return nil
}

// writeReproducer writes f as dir/<invariant>-<seed>.yaml with a header
// saying what it reproduces.
func writeReproducer(dir string, seed uint64, inv string, f *scenario.File) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := Reproducer(seed, inv, f)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%d.yaml", inv, seed))
	return path, os.WriteFile(path, b, 0o644)
}

// Reproducer is the text of a reproducer file for f.
func Reproducer(seed uint64, inv string, f *scenario.File) ([]byte, error) {
	f.Description = fmt.Sprintf("tdxsim fuzz seed %d, shrunk: breaks %s", seed, inv)
	b, err := scenario.Marshal(&f.Scenario)
	if err != nil {
		return nil, err
	}
	head := fmt.Sprintf("# Reproducer written by tdxsim fuzz (seed %d): breaks %s.\n# Replay it step by step with: tdxsim replay FILE\n", seed, inv)
	return append([]byte(head), b...), nil
}

// WriteText prints the summary for people.
func (s *Summary) WriteText(w interface{ Write([]byte) (int, error) }) {
	fmt.Fprintf(w, "fuzz: %d runs (seeds %d..%d), %d timeline steps, %d distinct interleavings, %.1f s\n",
		s.Runs, s.Seeds[0], s.Seeds[1], s.Steps, s.Interleavings, float64(s.ElapsedMS)/1000)
	fmt.Fprintf(w, "schedules: %d (%s), %.1f runs/s, %.1f interleavings/s on %d workers\n", s.Schedules, s.Strategy, s.RunsPerSec, s.InterleavingsPerSec, s.Workers)
	if s.Kernel != "" {
		fmt.Fprintf(w, "kernel: %s\n", s.Kernel)
	}
	if len(s.Policies) > 0 {
		fmt.Fprintf(w, "policies: %s\n", strings.Join(s.Policies, ", "))
	}
	if s.GuestOps > 0 {
		fmt.Fprintf(w, "hostile guest: %d operations, %d refused by the host\n", s.GuestOps, s.GuestRefused)
	}
	if len(s.Inject) > 0 {
		var n uint64
		for _, v := range s.Injected {
			n += v
		}
		fmt.Fprintf(w, "faults injected: %d (%s)\n", n, strings.Join(s.Inject, ", "))
	}
	s.Coverage.writeText(w)
	fmt.Fprintf(w, "outcomes (schedules): %d clean, %d kernel_response, %d violation\n",
		s.Outcomes[check.ClassClean], s.Outcomes[check.ClassKernelResponse], s.Outcomes[check.ClassViolation])
	if len(s.KernelResponses) > 0 {
		fmt.Fprintln(w, "kernel responses to injected faults (schedules, by kind):")
		for _, k := range slices.Sorted(maps.Keys(s.KernelResponses)) {
			fmt.Fprintf(w, "  %-24s %d\n", k, s.KernelResponses[k])
		}
	}
	if len(s.Violations) == 0 {
		fmt.Fprintln(w, "violations: none")
		return
	}
	fmt.Fprintln(w, "violations (runs, by invariant):")
	for _, inv := range slices.Sorted(maps.Keys(s.Violations)) {
		fmt.Fprintf(w, "  %-24s %d\n", inv, s.Violations[inv])
	}
	for _, fd := range s.Findings {
		fmt.Fprintf(w, "seed %d breaks %s after %d ms: %d steps, shrunk to %d", fd.Seed, strings.Join(fd.Broken, ", "), fd.FoundAfter, fd.Steps, fd.ShrunkSteps)
		if fd.Reproducer != "" {
			fmt.Fprintf(w, ": %s", fd.Reproducer)
		}
		fmt.Fprintln(w)
	}
	for _, tr := range s.Traces {
		fmt.Fprintf(w, "trace: %s\n", tr)
	}
}
