// Command tdxsim is an executable model of the Linux KVM + Intel TDX
// private-memory stack. This file only wires flags, files and exit codes.
//
// Exit codes: 0 ok, 1 a check failed, 2 bad input.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tdxsim/tdxsim/mrtd"
	"github.com/tdxsim/tdxsim/picture"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/scenario"
	"github.com/tdxsim/tdxsim/view"
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
	{"fuzz", "run random scenarios with every invariant checked; shrink failures to reproducers", cmdFuzz},
	{"explore", "run every schedule of a small scenario with at most k preemptions; stop at the first violation", cmdExplore},
	{"compare", "run two scenarios (or one with policy overrides) on one seed, side by side", cmdCompare},
	{"replay", "run a scenario (a fuzz reproducer) step by step with its trace", cmdReplay},
	{"serve", "serve a web UI over a run: GPA map, timeline, S-EPT walk, report, compare", cmdServe},
	{"bench", "measure the model's fault, split, build, teardown and scheduler speed and memory per page", cmdBench},
	{"mrtd", "print the MRTD of a TD built from a memory layout file", cmdMRTD},
	{"schema", "print the JSON Schema of scenario files", cmdSchema},
	{"kernels", "list the kernel profiles: base release, series, differences, sources", cmdKernels},
	{"version", "print the module version, VCS revision and Go version of this binary", cmdVersion},
	{"help", "print this help, or a command's flags and examples (tdxsim help CMD)", nil},
}

func main() { os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr)) }

// Main runs the CLI; it is separate from main for tests.
func Main(args []string, stdout, stderr io.Writer) int {
	stdinData = nil
	switch {
	case len(args) == 0:
		usage(stderr)
		return exitBadInput
	case args[0] == "-h" || args[0] == "--help" || args[0] == "-help":
		usage(stdout)
		return exitOK
	case args[0] == "help":
		return cmdHelp(args[1:], stdout, stderr)
	case args[0] == "--version" || args[0] == "-version":
		return cmdVersion(args[1:], stdout, stderr)
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
	fmt.Fprintln(w, "\nRun 'tdxsim help COMMAND' (or 'tdxsim COMMAND --help') for a command's flags and examples.")
	fmt.Fprintln(w, "Flags go anywhere among the arguments; '--' ends them; a FILE of '-' is standard input.")
	fmt.Fprintln(w, "Docs: docs/ in the repository (design, policies, kernels, invariants, cost model, glossary of the report).")
	fmt.Fprintln(w, "Exit codes: 0 ok, 1 a check failed, 2 bad input.")
}

// policyFlag collects repeated --policy k=v.
type policyFlag [][2]string

func (p *policyFlag) String() string { return fmt.Sprint([][2]string(*p)) }

// label names a run of file with these overrides ("a.yaml hugepages=off").
func (p policyFlag) label(file string) string {
	for _, kv := range p {
		file += " " + kv[0] + "=" + kv[1]
	}
	return file
}

func (p *policyFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want key=value", v)
	}
	*p = append(*p, [2]string{k, val})
	return nil
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tdxsim run", flag.ContinueOnError)
	seed := fs.Uint64("seed", 0, "scheduler and workload seed (default: the scenario's)")
	parallel := fs.Bool("parallel", false, "run simulated threads on real goroutines and locks (faster; the interleaving, and so some counts, vary from run to run)")
	asJSON := fs.Bool("json", false, "print the report as JSON (schema in the README)")
	costs := fs.Bool("costs", false, "print the SEAMCALL cost table in use, with the source of every figure, and exit")
	tf := addTraceFlags(fs)
	kf := addKernelFlag(fs)
	var injects policyFlag
	fs.Var(&injects, "inject", "fault injection (repeatable): busy=P (TDX_OPERAND_BUSY at rate P, only where a contender can exist: docs/faults.md), busy_leaves=L1,L2,\nfail=LEAF:N[:EVERY[:STATUS]] (the Nth call of LEAF fails: a module bug), alloc=[SOURCE]:N (the Nth allocation fails)")
	svgFile := fs.String("svg", "", "write the memory map (each TD's state at the last step before teardown) and the charts as a standalone SVG to FILE")
	var policies policyFlag
	fs.Var(&policies, "policy", "override a policy: hugepages=off|2M|1G, dynamic_pamt=true|false, max_order_from=gmem|folio,\nsplit_order=sept_first|folio_first, zap_private_on_notifier=true|false,\npin_private_pages=true|false, populate=map_private_pfn|gmem_populate, external_spt_cache=kvm|tdx_prealloc,\nteardown=per_page|terminate_vm (repeatable)")
	setUsage(fs, stderr, `usage: tdxsim run [flags] [FILE]

Runs a scenario file (YAML; see examples/ and 'tdxsim schema') through the
whole stack, or with no FILE the embedded default: a 4 GiB TD with 2 vCPUs,
a measured firmware image, lazy accept, 5% of memory converted to shared
and back, teardown. Prints the report: phases with modeled time, SEAMCALLs
by leaf, mappings, memory overhead, conversions, checks, the MRTD.`)
	if code := parseArgs(fs, args, stderr, 0, 1, "at most one scenario file"); code >= 0 {
		return code
	}
	if err := errors.Join(tf.check(), checkOutFile("svg", *svgFile)); err != nil {
		fmt.Fprintf(stderr, "tdxsim run: %v\n", err)
		return exitBadInput
	}
	f, code := kf.load("run", fs.Arg(0), policies, stderr)
	if f == nil {
		return code
	}
	for _, in := range injects {
		if err := f.SetInject(in[0], in[1]); err != nil {
			fmt.Fprintf(stderr, "tdxsim run: %v\n", err)
			return exitBadInput
		}
	}
	if *costs {
		table := f.Costs()
		if *asJSON {
			writeJSON(stdout, table)
		} else {
			table.WriteText(stdout)
		}
		return exitOK
	}
	o := scenario.Options{Parallel: *parallel}
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "seed" {
			o.Seed = seed
		}
	})
	rec, err := tf.options(f, &o)
	if err != nil {
		fmt.Fprintf(stderr, "tdxsim run: %v\n", err)
		return exitBadInput
	}
	var lastMaps []view.Map // each TD's map at its last step before teardown
	var each func(scenario.StepView)
	if *svgFile != "" {
		each = func(sv scenario.StepView) { lastMaps = view.Latest(lastMaps, view.Snapshot(sv.World)) }
	}
	bar := newProgress(stderr, " SEAMCALLs", 0) // no ETA: a step's work is not known before it runs
	r, err := drive(f, o, bar, nil, each)
	bar.finish()
	if werr := tf.write(rec); werr != nil {
		fmt.Fprintf(stderr, "tdxsim run: writing the trace: %v\n", werr)
		return exitOutput
	}
	if *svgFile != "" && r != nil {
		if werr := writeSVG(*svgFile, r, lastMaps); werr != nil {
			fmt.Fprintf(stderr, "tdxsim run: writing the SVG: %v\n", werr)
			return exitOutput
		}
	}
	return printRun("run", r, err, *asJSON, stdout, stderr)
}

// loadScenario loads path (the embedded default when "") and applies
// --kernel (when not "") and the --policy overrides; on bad input it prints why and returns nil and exit
// code 2.
func loadScenario(cmd, path, kernelName string, policies policyFlag, stderr io.Writer) (*scenario.File, int) {
	var f *scenario.File
	var err error
	switch path {
	case "-":
		var data []byte
		if data, err = readStdin(); err == nil {
			f, err = scenario.Parse(StdinName, data)
		}
	case "":
		f, err = scenario.Default()
	default:
		f, err = scenario.Load(path)
	}
	if err == nil {
		err = setKernel(f, kernelName)
	}
	for _, p := range policies {
		if err != nil {
			break
		}
		err = f.SetPolicy(p[0], p[1])
	}
	if err != nil {
		fmt.Fprintf(stderr, "tdxsim %s: %v\n", cmd, err)
		return nil, exitBadInput
	}
	return f, exitOK
}

// StdinName names a scenario read from standard input (a FILE of "-") in
// messages and reports; its relative image and firmware paths are taken
// from the working directory.
const StdinName = "stdin"

// stdin is standard input (tests replace it); stdinData holds what was
// read from it, so a command that loads "-" twice (compare or serve with
// --policy) reads it once.
var (
	stdin     io.Reader = os.Stdin
	stdinData []byte
)

func readStdin() ([]byte, error) {
	if stdinData != nil {
		return stdinData, nil
	}
	data, err := io.ReadAll(stdin)
	if err != nil {
		return nil, fmt.Errorf("reading standard input: %w", err)
	}
	stdinData = data
	return data, nil
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// printRun prints a run's report and returns the exit code: 1 when the
// run stopped or a check or expectation failed.
func printRun(cmd string, r *report.Run, err error, asJSON bool, stdout, stderr io.Writer) int {
	if r == nil {
		fmt.Fprintf(stderr, "tdxsim %s: %v\n", cmd, err)
		return exitCheck
	}
	if asJSON {
		r.WriteJSON(stdout)
	} else {
		r.WriteText(stdout)
	}
	if err != nil || r.Failed() {
		return exitCheck
	}
	return exitOK
}

func cmdSchema(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tdxsim schema", flag.ContinueOnError)
	ofReport := fs.Bool("report", false, "print the JSON Schema of the run report (run --json, replay --json) instead")
	setUsage(fs, stderr, `usage: tdxsim schema [--report]

Prints the JSON Schema of scenario files (generated from the Go types the loader
decodes into), for editors: yaml-language-server's $schema, VS Code, ...
With --report, the JSON Schema of the run report (from report.Run; each key
is explained in docs/glossary.md).`)
	if code := parseArgs(fs, args, stderr, 0, 0, "takes no arguments"); code >= 0 {
		return code
	}
	schema := scenario.Schema
	if *ofReport {
		schema = report.Schema
	}
	b, err := schema()
	if err != nil {
		fmt.Fprintf(stderr, "tdxsim schema: %v\n", err)
		return exitCheck
	}
	stdout.Write(append(b, '\n'))
	return exitOK
}

func cmdMRTD(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tdxsim mrtd", flag.ContinueOnError)
	layout := fs.String("layout", "", "layout file (YAML: regions of {gpa, file|size, fill, measure})")
	firmware := fs.String("firmware", "", "TDVF firmware image (OVMF with TDX metadata, e.g. /usr/share/ovmf/OVMF.fd)")
	sections := fs.Bool("sections", false, "with --firmware: print the section table before the MRTD")
	memory := fs.String("memory", "2G", "with --firmware: the TD's RAM, laid out as QEMU's q35 does (the MRTD does not depend on it)")
	vmmName := fs.String("vmm", "qemu", "with --firmware: whose build to follow: qemu, cloud-hypervisor or tdvf-spec (PAGE.AUG sections left out)")
	asJSON := fs.Bool("json", false, `print {"mrtd": "..."} (with --firmware also "sections": [...])`)
	setUsage(fs, stderr, `usage: tdxsim mrtd --layout FILE [--json]
       tdxsim mrtd --firmware FILE [--sections] [--memory SIZE] [--vmm NAME] [--json]

Prints the MRTD (SHA-384, 96 hex characters) of a TD built from FILE: each
4 KiB page added with TDH.MEM.PAGE.ADD in the order given and, where
measure is true, extended with TDH.MR.EXTEND in 256-byte chunks.

  regions:
    - {gpa: 0xFFC00000, file: OVMF.fd, measure: true}
    - {gpa: 1M, size: 64K, fill: 0, measure: false}

GPAs and sizes: decimal, 0x hex, or with K/M/G. file is relative to FILE.

With --firmware, FILE is a TDVF image and the TD is built as QEMU builds
it on KVM: its TDX metadata sections in metadata order, one
KVM_TDX_INIT_MEM_REGION each (BFV and CFV from the file, TD_HOB holding
QEMU's HOB list, TempMem zeroed), MR.EXTEND sections measured. --vmm
cloud-hypervisor follows cloud-hypervisor instead (RawDataSize bytes
copied, only attributes == MR.EXTEND measured); --vmm tdvf-spec leaves
PAGE.AUG sections out. A damaged or non-TDVF image is exit 2 with the
file offset of what is wrong.`)
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	if (*layout == "") == (*firmware == "") || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "tdxsim mrtd: --layout FILE is required (or --firmware FILE; one of them, and nothing else)")
		return exitBadInput
	}
	if *firmware != "" {
		return firmwareMRTD(*firmware, *memory, *vmmName, *sections, *asJSON, stdout, stderr)
	}
	if *sections {
		fmt.Fprintln(stderr, "tdxsim mrtd: --sections goes with --firmware")
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

// writeSVG draws r and the TDs' maps into path.
func writeSVG(path string, r *report.Run, maps []view.Map) error {
	var buf bytes.Buffer // the SVG writer does not report its writes' errors
	if err := picture.Write(&buf, r, maps); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
