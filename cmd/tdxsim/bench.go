package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/tdxsim/tdxsim/bench"
)

func cmdBench(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tdxsim bench", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, `print {"machine": {...}, "cores": N, "rounds": N, "results": [{"name", "ops_per_sec", "median", "min", "max", "bytes_per_page", ...}]}`)
	rounds := fs.Int("rounds", bench.DefaultRounds, "measure each figure this many times, interleaved, and report the median and the min and max")
	quick := fs.Bool("quick", false, "divide every size by 16 (a first look; the figures are noisier)")
	scale := fs.Bool("scale", false, "also boot and fully accept a 64 GiB TD at 4K and a 1 TiB TD at 2M, with wall time and peak RSS")
	setUsage(fs, stderr, `usage: tdxsim bench [flags]

Measures the model on this machine, every figure once per round, for
--rounds rounds (so the model's figures and the real kernel's alternate
and share the machine's state); each figure is the median of its rounds
with their min and max. The figures: the private
4K and 2M fault paths (EPT violation, fault, AUG, accept), converting a 4K
page inside a 2M mapping, a TD build with a 64 MiB measured image, teardown
per GiB, the deterministic scheduler's thread switch, two vCPUs faulting in
parallel, what the per-step checks cost, and the real kernel's guest_memfd
fault-in rate where /dev/kvm can be opened. Each is operations per second
(time per operation for slow ones) and, where pages are mapped, bytes of
model state (live heap) per page and Go heap allocations per fault.
fault_4k's vs_real_kvm is its median over the real kernel's median, and
fault_4k_2vcpus's vs_one_vcpu its median over fault_4k's, both from the
same run; without /dev/kvm there is no vs_real_kvm and the report says why.`)
	if code := parseArgs(fs, args, stderr, 0, 0, "takes no arguments"); code >= 0 {
		return code
	}
	if *rounds < 1 {
		fmt.Fprintf(stderr, "tdxsim bench: --rounds %d: want at least 1\n", *rounds)
		return exitBadInput
	}
	cfg := bench.Config{Quick: *quick, Scale: *scale, Rounds: *rounds}
	if !*asJSON {
		cfg.Progress = func(name string, round, rounds int) {
			fmt.Fprintf(stderr, "measuring %s (round %d/%d)\n", name, round, rounds)
		}
	}
	rep, err := bench.Run(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "tdxsim bench: %v\n", err)
		return exitCheck
	}
	if *asJSON {
		writeJSON(stdout, rep)
	} else {
		rep.WriteText(stdout)
	}
	return exitOK
}
