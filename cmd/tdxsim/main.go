// Command tdxsim is an executable model of the Linux KVM + Intel TDX
// private-memory stack. This file only wires flags, files and exit codes.
//
// Exit codes: 0 ok, 1 a check failed, 2 bad input.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/mrtd"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/vmm"
)

const (
	exitOK       = 0
	exitCheck    = 1
	exitBadInput = 2
)

type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) int
}

var commands = []command{
	{"run", "run a TD through build, run and teardown and print a report", cmdRun},
	{"mrtd", "print the MRTD of a TD built from a memory layout file", cmdMRTD},
}

func main() { os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr)) }

// Main runs the CLI; it is separate from main for tests.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return exitBadInput
		}
		return exitOK
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "tdxsim: unknown command %q (see tdxsim --help)\n", args[0])
	return exitBadInput
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "tdxsim: an executable model of KVM + Intel TDX private memory")
	fmt.Fprintln(w, "\nusage: tdxsim COMMAND [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'tdxsim COMMAND --help' for a command's flags.")
	fmt.Fprintln(w, "Exit codes: 0 ok, 1 a check failed, 2 bad input.")
}

// parse parses flags; it returns an exit code to stop with, or -1 to go on.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) int {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitBadInput
	}
	return -1
}

// sizeFlag is a flag.Value taking 4K/2M/1G-style sizes.
type sizeFlag struct{ v *uint64 }

func (s sizeFlag) String() string {
	if s.v == nil {
		return "0"
	}
	return fmt.Sprint(*s.v)
}

func (s sizeFlag) Set(v string) error {
	n, err := addr.ParseSize(v)
	if err != nil {
		return err
	}
	*s.v = n
	return nil
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tdxsim run", flag.ContinueOnError)
	o := vmm.LifecycleOptions{HostBytes: 64 << 30, MemBytes: 1 << 30, VCPUs: 2, Packages: 2,
		ImageBytes: 2 << 20, AcceptBytes: 64 << 20, ConvertBytes: 8 << 20, PunchBytes: 4 << 20}
	fs.Var(sizeFlag{&o.HostBytes}, "host-mem", "host memory size")
	fs.Var(sizeFlag{&o.MemBytes}, "mem", "TD memory (one memslot at GPA 0; a multiple of 2M)")
	fs.Var(sizeFlag{&o.ImageBytes}, "image", "measured firmware image at the top of TD memory")
	fs.Var(sizeFlag{&o.AcceptBytes}, "accept", "private memory the vCPUs accept, from GPA 0")
	fs.Var(sizeFlag{&o.ConvertBytes}, "convert", "memory the guest converts to shared (MapGPA) and back")
	fs.Var(sizeFlag{&o.PunchBytes}, "punch", "memory the VMM punches out of guest_memfd after the conversion")
	fs.IntVar(&o.VCPUs, "vcpus", o.VCPUs, "vCPUs accepting memory concurrently")
	fs.IntVar(&o.Packages, "packages", o.Packages, "CPU packages (KEY.CONFIG and CACHE.WB run on each)")
	fs.BoolVar(&o.DynamicPAMT, "dpamt", true, "Dynamic PAMT")
	fs.Uint64Var(&o.Seed, "seed", 1, "deterministic scheduler seed")
	hugePages := fs.String("hugepages", "2M", "policy hugepages: off, 2M or 1G (1G also lets the TDX module AUG 1G pages)")
	maxOrderFrom := fs.String("max-order-from", "gmem", "policy max_order_from: gmem or folio (the rejected design)")
	splitOrder := fs.String("split-order", "sept_first", "policy split_order: sept_first or folio_first (the rejected design)")
	fs.BoolVar(&o.Accept4K, "accept-4k", false, "the guest accepts at 4 KiB only (default: 2 MiB first, as Linux)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: tdxsim run [flags]\n\nRuns the embedded default through the whole stack: the VMM builds a TD with\na measured image (KVM_TDX_INIT_MEM_REGION), vCPUs fault and accept memory\n(EPT violation -> TDP MMU mirror root -> TDH.MEM.PAGE.AUG), the guest\nconverts memory to shared and back with MapGPA, the VMM punches a hole,\nand the TD is torn down. Scenario files arrive with the scenario layer.\n\nflags:")
		fs.PrintDefaults()
	}
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tdxsim run: scenario file %q: scenario files are not supported yet; run without a file for the embedded default\n", fs.Arg(0))
		return exitBadInput
	}
	var err error
	if o.MMU.HugePages, err = mmu.ParseHugePages(*hugePages); err != nil {
		fmt.Fprintf(stderr, "tdxsim run: -hugepages: %v\n", err)
		return exitBadInput
	}
	o.Allow1GAug = o.MMU.HugePages == mmu.HugePages1G
	if o.MMU.MaxOrderFrom, err = mmu.ParseMaxOrderFrom(*maxOrderFrom); err != nil {
		fmt.Fprintf(stderr, "tdxsim run: -max-order-from: %v\n", err)
		return exitBadInput
	}
	switch *splitOrder {
	case "sept_first":
	case "folio_first":
		o.SplitFolioFirst = true
	default:
		fmt.Fprintf(stderr, "tdxsim run: -split-order %q: must be sept_first or folio_first\n", *splitOrder)
		return exitBadInput
	}
	if o.VCPUs < 1 || o.VCPUs > 256 {
		fmt.Fprintf(stderr, "tdxsim run: -vcpus %d: must be 1..256\n", o.VCPUs)
		return exitBadInput
	}
	if o.Packages < 1 || o.Packages > 64 {
		fmt.Fprintf(stderr, "tdxsim run: -packages %d: must be 1..64\n", o.Packages)
		return exitBadInput
	}
	if o.MemBytes == 0 || o.MemBytes%(2<<20) != 0 || o.MemBytes > 1<<40 {
		fmt.Fprintln(stderr, "tdxsim run: -mem must be a multiple of 2M, at most 1T")
		return exitBadInput
	}
	if o.AcceptBytes%addr.PageSize != 0 || o.ConvertBytes%addr.PageSize != 0 || o.PunchBytes%addr.PageSize != 0 ||
		o.ConvertBytes+o.PunchBytes > o.AcceptBytes {
		fmt.Fprintln(stderr, "tdxsim run: -accept, -convert and -punch must be 4 KiB multiples with convert+punch <= accept")
		return exitBadInput
	}
	if o.AcceptBytes+o.ImageBytes > o.MemBytes || o.MemBytes > o.HostBytes/2 {
		fmt.Fprintln(stderr, "tdxsim run: -accept plus -image must fit in -mem, and -mem in half of -host-mem")
		return exitBadInput
	}
	c := event.NewCounter()
	res, err := vmm.Lifecycle(o, c)
	if errors.Is(err, vmm.ErrBadOptions) {
		fmt.Fprintf(stderr, "tdxsim run: %v\n", err)
		return exitBadInput
	}
	if err != nil {
		fmt.Fprintf(stderr, "tdxsim run: %v\n", err)
		return exitCheck
	}
	r := report.NewLifecycle(o.Seed, c, res)
	if *asJSON {
		r.WriteJSON(stdout)
	} else {
		r.WriteText(stdout)
	}
	if len(r.Violations) > 0 {
		return exitCheck
	}
	return exitOK
}

func cmdMRTD(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tdxsim mrtd", flag.ContinueOnError)
	layout := fs.String("layout", "", "layout file (YAML: regions of {gpa, file|size, fill, measure})")
	asJSON := fs.Bool("json", false, `print {"mrtd": "..."}`)
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: tdxsim mrtd --layout FILE [--json]

Prints the MRTD (SHA-384, 96 hex characters) of a TD built from FILE: each
4 KiB page added with TDH.MEM.PAGE.ADD in the order given and, where
measure is true, extended with TDH.MR.EXTEND in 256-byte chunks.

  regions:
    - {gpa: 0xFFC00000, file: OVMF.fd, measure: true}
    - {gpa: 1M, size: 64K, fill: 0, measure: false}

GPAs and sizes: decimal, 0x hex, or with K/M/G. file is relative to FILE.

flags:`)
		fs.PrintDefaults()
	}
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	if *layout == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "tdxsim mrtd: --layout FILE is required (and nothing else)")
		return exitBadInput
	}
	l, err := mrtd.Load(*layout)
	if err != nil {
		fmt.Fprintf(stderr, "tdxsim mrtd: %v\n", err)
		return exitBadInput
	}
	d, err := mrtd.Compute(l)
	if err != nil {
		var ie *mrtd.InputError
		if errors.As(err, &ie) {
			fmt.Fprintf(stderr, "tdxsim mrtd: %v\n", err)
			return exitBadInput
		}
		fmt.Fprintf(stderr, "tdxsim mrtd: building the TD: %v\n", err)
		return exitCheck
	}
	if *asJSON {
		fmt.Fprintf(stdout, "{\"mrtd\": %q}\n", mrtd.Hex(d))
	} else {
		fmt.Fprintln(stdout, mrtd.Hex(d))
	}
	return exitOK
}
