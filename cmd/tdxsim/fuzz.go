package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/fuzz"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/scenario"
)

// shardFlag is --shard i/n.
type shardFlag struct{ i, n int }

func (s *shardFlag) String() string { return fmt.Sprintf("%d/%d", s.i, s.n) }

func (s *shardFlag) Set(v string) error {
	a, b, ok := strings.Cut(v, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return fmt.Errorf("%q: want i/n with 0 <= i < n (e.g. 0/4)", v)
	}
	s.i, s.n = i, n
	return nil
}

func cmdFuzz(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "merge" {
		return cmdFuzzMerge(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("tdxsim fuzz", flag.ContinueOnError)
	seed := fs.Uint64("seed", 1, "first seed")
	runs := fs.Int("runs", 0, "scenarios to run (default 100 when --duration is not given)")
	sf := addSearchFlags(fs, "fuzz-out", "directory for shrunk reproducers (\"\" for none)",
		"set a policy in every generated scenario (repeatable), as for run")
	duration, out, asJSON, policies := sf.duration, sf.out, sf.asJSON, &sf.policies
	shrinkRuns := fs.Int("shrink-runs", 400, "runs one shrink may make")
	withTrace := fs.Bool("trace", false, "write a Chrome trace beside each reproducer (NAME.trace.json)")
	workers := fs.Int("workers", runtime.NumCPU(), "scenarios run at once (results are the same for any count: merged in seed order)")
	shard := shardFlag{0, 1}
	fs.Var(&shard, "shard", "run shard i of n: seeds seed+i, seed+i+n, ... (disjoint across shards)")
	hostile := fs.Bool("hostile", false, "hostile guests: a third of the guest workloads issue ACCEPT and MapGPA with any operands while their vCPUs race")
	var injects policyFlag
	fs.Var(&injects, "inject", "fault injection in every generated scenario (repeatable), as for run")
	schedules := fs.Int("schedules", 4, "schedules per generated scenario, each a distinct scheduler seed")
	strategy := fs.String("strategy", "random", "scheduler strategy: random (uniform among runnable threads) or pct (random priorities, depth-1 change points)")
	depth := fs.Int("depth", scenario.DefaultPCTDepth, "PCT bug depth d: d-1 priority change points (--strategy pct)")
	firstFinding := fs.Bool("stop-at-finding", false, "stop after the scenario of the first finding (for timing how fast a bug is found)")
	maxMem := fs.String("max-memory", "64M", "largest generated TD (a multiple of 2M, at least 8M; e.g. 1G for big TDs)")
	faults := fs.String("faults", fuzz.FaultsMenu, "the faults the generator injects: menu (a few scenarios get BUSYs KVM retries and a failed top-up; none with --inject),\nall (half get faults of every kind KVM answers: a failure of each SEAMCALL, an allocation failure from each cache and pool; on top of --inject), none")
	kf := addKernelFlag(fs)
	setUsage(fs, stderr, `usage: tdxsim fuzz [flags]
       tdxsim fuzz merge [--json] PATH...   (merge shard summaries; tdxsim fuzz merge --help)

Generates random scenarios from consecutive seeds (host events, guest
workloads, concurrent vCPUs and steps), runs each under --schedules
schedules of the deterministic scheduler (random or PCT) with every
invariant checked after every step, and shrinks the
first failure of each invariant to a minimal scenario file that
'tdxsim replay FILE' reproduces exactly. Exit 1 when a violation was found.`)
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tdxsim fuzz: unexpected argument %q\n", fs.Arg(0))
		return exitBadInput
	}
	if err := fuzzRanges(fs, *runs, *duration, *shrinkRuns, *out); err != nil {
		fmt.Fprintf(stderr, "tdxsim fuzz: %v\n", err)
		return exitBadInput
	}
	maxBytes, err := addr.ParseSize(*maxMem)
	if err == nil {
		err = fuzz.CheckMaxMemory(maxBytes)
	}
	if err != nil {
		fmt.Fprintf(stderr, "tdxsim fuzz: --max-memory %s: %v\n", *maxMem, err)
		return exitBadInput
	}
	if *workers < 1 {
		fmt.Fprintf(stderr, "tdxsim fuzz: --workers %d: want at least 1 (leave it out for one per CPU)\n", *workers)
		return exitBadInput
	}
	switch {
	case *schedules < 1:
		fmt.Fprintf(stderr, "tdxsim fuzz: --schedules %d: want at least 1\n", *schedules)
		return exitBadInput
	case *strategy != "random" && *strategy != "pct":
		fmt.Fprintf(stderr, "tdxsim fuzz: --strategy %q: want random or pct\n", *strategy)
		return exitBadInput
	case *depth < 1 || *depth > 64:
		fmt.Fprintf(stderr, "tdxsim fuzz: --depth %d: want 1..64\n", *depth)
		return exitBadInput
	}
	if err := fuzz.CheckFaults(*faults); err != nil {
		fmt.Fprintf(stderr, "tdxsim fuzz: --faults %v\n", err)
		return exitBadInput
	}
	kname, ok := kf.one("fuzz", stderr)
	if !ok {
		return exitBadInput
	}
	bar := newProgress(stderr, " runs", int64(*runs)) // an ETA with --runs; with --duration the end is known
	cfg := fuzz.Config{Seed: *seed, Runs: *runs, Duration: *duration, Kernel: kname, Policies: *policies, Inject: injects, Faults: *faults, Hostile: *hostile, Shard: shard.i, Shards: shard.n,
		Out: *out, ShrinkRuns: *shrinkRuns, Workers: *workers, Schedules: *schedules, Strategy: *strategy, Depth: *depth, StopAtFinding: *firstFinding, MaxMemory: maxBytes}
	if *runs == 0 && *duration == 0 {
		bar = newProgress(stderr, " runs", 100) // the campaign's default
	}
	start := time.Now()
	cfg.Live = func(s *fuzz.Summary) { bar.set(int64(s.Runs), fuzzStatus(s, *duration, time.Since(start))) }
	sum, err := fuzz.Campaign(cfg)
	bar.finish()
	if err != nil {
		fmt.Fprintf(stderr, "tdxsim fuzz: %v\n", err)
		if errors.As(err, new(*scenario.InputError)) {
			return exitBadInput // a bad --policy: every generated scenario refuses it
		}
		if errors.As(err, new(*fuzz.OutputError)) {
			return exitOutput
		}
		return exitCheck
	}
	if *withTrace {
		for _, p := range sum.Reproducers {
			tp, err := traceReproducer(p)
			if err != nil {
				fmt.Fprintf(stderr, "tdxsim fuzz: tracing %s: %v\n", p, err)
				return exitOutput
			}
			sum.Traces = append(sum.Traces, tp)
		}
	}
	if *asJSON {
		writeJSON(stdout, sum)
	} else {
		sum.WriteText(stdout)
	}
	if len(sum.Violations) > 0 {
		return exitCheck
	}
	return exitOK
}

// fuzzStatus is fuzz's live line: interleavings, the runs that broke an
// invariant, those that ended in a kernel response to an injected fault,
// and with --duration the time left.
func fuzzStatus(s *fuzz.Summary, d, elapsed time.Duration) string {
	line := fmt.Sprintf("%d interleavings, %d violating runs (%d invariants), %d kernel responses", s.Interleavings,
		s.Outcomes[check.ClassViolation], len(s.Violations), s.Outcomes[check.ClassKernelResponse])
	if d > 0 {
		line += fmt.Sprintf(", %s left", max(d-elapsed, 0).Round(time.Second))
	}
	return line
}

func cmdReplay(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tdxsim replay", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print only the report, as JSON, on stdout (the step lines go to stderr)")
	tf := addTraceFlags(fs)
	kf := addKernelFlag(fs)
	setUsage(fs, stderr, `usage: tdxsim replay [flags] FILE

Runs a scenario file (a fuzz reproducer, or any scenario) under the
deterministic scheduler with its seed, printing a line per step: the
SEAMCALLs it made, the scheduler steps, and every check it broke; then the
report. Exit 1 when a check failed.`)
	if code := parseArgs(fs, args, stderr, 1, 1, "want exactly one scenario file"); code >= 0 {
		return code
	}
	if err := tf.check(); err != nil {
		fmt.Fprintf(stderr, "tdxsim replay: %v\n", err)
		return exitBadInput
	}
	f, code := kf.load("replay", fs.Arg(0), nil, stderr)
	if f == nil {
		return code
	}
	lines := stdout // with --json stdout is the report alone
	if *asJSON {
		lines = stderr
	}
	fmt.Fprintf(lines, "replay %s: seed %d\n", fs.Arg(0), *f.Seed)
	var o scenario.Options
	rec, err := tf.options(f, &o)
	if err != nil {
		fmt.Fprintf(stderr, "tdxsim replay: %v\n", err)
		return exitBadInput
	}
	r, err := drive(f, o, nil, &tracer{w: lines}, nil)
	fmt.Fprintln(lines)
	if werr := tf.write(rec); werr != nil {
		fmt.Fprintf(stderr, "tdxsim replay: writing the trace: %v\n", werr)
		return exitOutput
	}
	return printRun("replay", r, err, *asJSON, stdout, stderr)
}

func cmdCompare(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tdxsim compare", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the comparison as JSON")
	seed := fs.Uint64("seed", 0, "seed for both runs (default: A's)")
	var policies policyFlag
	fs.Var(&policies, "policy", "B is A with this policy set (repeatable); or give a second file")
	kf := addKernelFlag(fs)
	setUsage(fs, stderr, `usage: tdxsim compare [flags] A.yaml [B.yaml]
       tdxsim compare --policy k=v [--policy k=v ...] A.yaml
       tdxsim compare --kernel A --kernel B FILE

Runs two scenarios (two files, one file and the same file with policy
overrides, or one file under two kernel profiles) on the same seed and prints their figures side by side, the
differences marked: SEAMCALLs, modeled time, memory overhead, mappings,
splits, violations. Exit 1 when either run broke a check.`)
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	two := len(*kf) == 2
	if fs.NArg() < 1 || fs.NArg() > 2 || len(*kf) > 2 || (two && fs.NArg() != 1) ||
		(fs.NArg() == 1) == (len(policies) == 0 && !two) {
		fmt.Fprintln(stderr, "tdxsim compare: want two scenario files, or one file and --policy overrides or two --kernel profiles")
		return exitBadInput
	}
	a, kA, kB, code := kf.loadFirst("compare", fs.Arg(0), stderr)
	if a == nil {
		return code
	}
	bPath := fs.Arg(fs.NArg() - 1)
	b, code := loadScenario("compare", bPath, kB, policies, stderr)
	if b == nil {
		return code
	}
	nameA, nameB := fs.Arg(0), policies.label(bPath)
	if two {
		nameA += " kernel=" + kA
		nameB = policies.label(bPath + " kernel=" + kB)
	}
	s := *a.Seed
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "seed" {
			s = *seed
		}
	})
	ra, errA := drive(a, scenario.Options{Seed: &s}, nil, nil, nil)
	rb, errB := drive(b, scenario.Options{Seed: &s}, nil, nil, nil)
	if ra == nil || rb == nil {
		fmt.Fprintf(stderr, "tdxsim compare: %v\n", errors.Join(errA, errB))
		return exitCheck
	}
	c := report.Compare(nameA, ra, nameB, rb)
	if *asJSON {
		writeJSON(stdout, c)
	} else {
		c.WriteText(stdout)
	}
	if errA != nil || errB != nil || ra.Failed() || rb.Failed() {
		return exitCheck
	}
	return exitOK
}
