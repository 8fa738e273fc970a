package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tdxsim/tdxsim/explore"
	"github.com/tdxsim/tdxsim/scenario"
)

// cmdExplore is `tdxsim explore FILE`: every schedule of a small
// scenario with at most --preemptions preemptions, each run checked.
func cmdExplore(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tdxsim explore", flag.ContinueOnError)
	k := fs.Int("preemptions", 2, "at most this many preemptions per schedule (iterative context bounding)")
	maxSchedules := fs.Int("max-schedules", 100000, "stop after this many schedules (0: no cap)")
	sf := addSearchFlags(fs, "explore-out", "directory for the reproducer of a violation (\"\" for none)",
		"set a policy, as for run (repeatable)")
	duration, out, asJSON := sf.duration, sf.out, sf.asJSON
	kf := addKernelFlag(fs)
	setUsage(fs, stderr, `usage: tdxsim explore [flags] FILE

Runs every schedule of the scenario FILE that has at most --preemptions
preemptions (iterative context bounding, Musuvathi and Qadeer, PLDI 2007),
depth first, each checked by every invariant after every step. A
preemption is running another thread while the one on the CPU could go
on; choosing after a thread blocks is free. No state reduction: the
model's state cannot be hashed at a scheduling point, so keep scenarios
small (one or two TDs of a few MiB, few steps). Stops at the first
violation and writes a reproducer whose schedule: block pins it (tdxsim
replay runs it). Exit 0 when the bounded space was exhausted clean, 1 on
a violation or when a cap stopped it first, 2 on bad input.`)
	if code := parseArgs(fs, args, stderr, 1, 1, "want exactly one scenario file"); code >= 0 {
		return code
	}
	switch {
	case *k < 0 || *k > 16:
		fmt.Fprintf(stderr, "tdxsim explore: --preemptions %d: want 0..16\n", *k)
		return exitBadInput
	case *maxSchedules < 0:
		fmt.Fprintf(stderr, "tdxsim explore: --max-schedules %d: want 0 (no cap) or more\n", *maxSchedules)
		return exitBadInput
	case *duration < 0:
		fmt.Fprintf(stderr, "tdxsim explore: --duration %v: want a positive duration\n", *duration)
		return exitBadInput
	}
	if err := checkOutDir("out", *out); err != nil {
		fmt.Fprintf(stderr, "tdxsim explore: %v\n", err)
		return exitBadInput
	}
	f, code := kf.load("explore", fs.Arg(0), sf.policies, stderr)
	if f == nil {
		return code
	}
	bar := newProgress(stderr, " schedules", int64(*maxSchedules))
	start := time.Now()
	res := explore.Run(f, explore.Config{Preemptions: *k, MaxSchedules: *maxSchedules, Duration: *duration,
		Progress: func(r *explore.Result) {
			el := time.Since(start)
			bar.set(int64(r.Schedules), fmt.Sprintf("%d interleavings, %.0f schedules/s, 0 violations, %s", r.Distinct, float64(r.Schedules)/max(el.Seconds(), 1e-3), el.Round(time.Second)))
		}})
	bar.finish()
	if v := res.Violation; v != nil && *out != "" {
		path, err := writeExploreReproducer(*out, fs.Arg(0), f, v)
		if err != nil {
			fmt.Fprintf(stderr, "tdxsim explore: writing the reproducer: %v\n", err)
			return exitOutput
		}
		v.Reproducer = path
	}
	if *asJSON {
		writeJSON(stdout, res)
	} else {
		writeExplore(stdout, res)
	}
	if res.Violation != nil || !res.Exhausted {
		return exitCheck
	}
	return exitOK
}

func writeExplore(w io.Writer, r *explore.Result) {
	fmt.Fprintf(w, "explore: %d schedules with ≤ %d preemptions, %d distinct interleavings, at most %d decisions with a choice, %.1f s\n",
		r.Schedules, r.Preemptions, r.Distinct, r.MaxDecisions, float64(r.ElapsedMS)/1000)
	switch {
	case r.Violation != nil:
		v := r.Violation
		fmt.Fprintf(w, "violation: %s after %d schedules, by a schedule with %d preemptions\n", strings.Join(v.Broken, ", "), r.Schedules, v.Preemptions)
		if v.Reproducer != "" {
			fmt.Fprintf(w, "reproducer: %s (tdxsim replay %s)\n", v.Reproducer, v.Reproducer)
		}
	case r.Exhausted:
		fmt.Fprintf(w, "all %d schedules with ≤ %d preemptions: no violation\n", r.Schedules, r.Preemptions)
	default:
		fmt.Fprintf(w, "not exhausted: a cap (--max-schedules or --duration) stopped it after %d schedules; no violation so far\n", r.Schedules)
	}
}

// writeExploreReproducer writes f with its schedule pinned to v's picks.
func writeExploreReproducer(dir, src string, f *scenario.File, v *explore.Violation) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	g := *f
	g.Schedule = scenario.Schedule{Strategy: "fixed", Picks: scenario.FormatPicks(v.Picks)}
	g.Description = fmt.Sprintf("tdxsim explore: a schedule with %d preemptions breaks %s", v.Preemptions, strings.Join(v.Broken, ", "))
	b, err := scenario.Marshal(&g.Scenario)
	if err != nil {
		return "", err
	}
	b = append([]byte("# Reproducer written by tdxsim explore: its schedule block pins the failing interleaving.\n# Replay it step by step with: tdxsim replay FILE\n"), b...)
	name := strings.TrimSuffix(filepath.Base(src), filepath.Ext(src))
	if name == "" || name == "-" {
		name = "stdin"
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%s-explore.yaml", v.Broken[0], name))
	return path, os.WriteFile(path, b, 0o644)
}
