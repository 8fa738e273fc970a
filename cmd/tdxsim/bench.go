package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/tdxsim/tdxsim/bench"
)

func cmdBench(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tdxsim bench", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, `print {"cores": N, "results": [{"name", "ops_per_sec", "bytes_per_page", ...}]}`)
	quick := fs.Bool("quick", false, "divide every size by 16 (a first look; the figures are noisier)")
	scale := fs.Bool("scale", false, "also boot and fully accept a 64 GiB TD at 4K and a 1 TiB TD at 2M, with wall time and peak RSS")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: tdxsim bench [flags]

Measures the model on this machine, one figure after another: the private
4K and 2M fault paths (EPT violation, fault, AUG, accept), converting a 4K
page inside a 2M mapping, a TD build with a 64 MiB measured image, teardown
per GiB, the deterministic scheduler's thread switch, two vCPUs faulting in
parallel, what the per-step checks cost, and the real kernel's guest_memfd
fault-in rate where /dev/kvm can be opened. Each is operations per second
and, where pages are mapped, bytes of model state (live heap) per page.

flags:`)
		fs.PrintDefaults()
	}
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "tdxsim bench: takes no arguments")
		return exitBadInput
	}
	cfg := bench.Config{Quick: *quick, Scale: *scale}
	if !*asJSON {
		cfg.Progress = func(name string) { fmt.Fprintf(stderr, "measuring %s\n", name) }
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
