package main

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/kernel"
	"github.com/tdxsim/tdxsim/scenario"
)

// kernelRun is what these tests read from run --json.
type kernelRun struct {
	Kernel       string            `json:"kernel"`
	Seamcalls    map[string]uint64 `json:"seamcalls"`
	MappingsPeak map[string]int64  `json:"mappings_peak"`
}

func runKernel(t *testing.T, args ...string) kernelRun {
	t.Helper()
	code, out, errs := run(append([]string{"run", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("run %v: exit %d: %s", args, code, errs)
	}
	var r kernelRun
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// With neither kernel: nor --kernel the run is the default profile, and
// says so; --kernel picks another; a file's kernel: picks one, and
// --kernel beats it.
func TestKernelSelection(t *testing.T) {
	plain := writeScenario(t, small4K)
	if r := runKernel(t, plain); r.Kernel != kernel.Default {
		t.Errorf("no kernel given: report kernel %q, want %q", r.Kernel, kernel.Default)
	}
	if r := runKernel(t, "--kernel", "7.0", plain); r.Kernel != "7.0" {
		t.Errorf("--kernel 7.0: report kernel %q", r.Kernel)
	}
	inFile := writeScenario(t, "kernel: \"6.19\"\n"+strings.Replace(small4K, "policies: {hugepages: \"off\"}\n", "", 1))
	if r := runKernel(t, inFile); r.Kernel != "6.19" || r.MappingsPeak["2M"] != 0 {
		t.Errorf("kernel: 6.19 in the file: kernel %q, 2M peak %d", r.Kernel, r.MappingsPeak["2M"])
	}
	if r := runKernel(t, "--kernel", "dpamt-v6", inFile); r.Kernel != "dpamt-v6" || r.Seamcalls["TDH.PHYMEM.PAMT.ADD"] == 0 {
		t.Errorf("--kernel dpamt-v6 over kernel: 6.19: kernel %q, PAMT.ADD %d", r.Kernel, r.Seamcalls["TDH.PHYMEM.PAMT.ADD"])
	}
	code, out, _ := run("run", "--kernel", "7.0", plain)
	if code != 0 || !strings.Contains(out, "kernel 7.0") {
		t.Errorf("text report does not name the kernel (exit %d):\n%.300s", code, out)
	}
}

// A profile sets defaults only: the file's and --policy's settings win
// (--policy over the file), within what the profile's tree has.
func TestKernelOverridePrecedence(t *testing.T) {
	f, err := scenario.Parse("s.yaml", []byte("policies: {hugepages: \"off\", split_order: folio_first}\ntds: [{memory: 64M}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := *f.Policies.DynamicPAMT; !got {
		t.Errorf("default kernel: dynamic_pamt %v, want its profile's true", got)
	}
	if err := f.SetKernel("7.0"); err != nil {
		t.Fatal(err)
	}
	if *f.Policies.DynamicPAMT || f.Policies.HugePages != "off" || f.Policies.SplitOrder != "folio_first" {
		t.Errorf("7.0: %+v: want dynamic_pamt false from the profile, the file's hugepages and split_order", f.Policies)
	}
	if err := f.SetPolicy("split_order", "sept_first"); err != nil || f.Policies.SplitOrder != "sept_first" {
		t.Errorf("--policy split_order=sept_first over the file: %v, %q", err, f.Policies.SplitOrder)
	}
	if err := f.SetKernel(kernel.Default); err != nil {
		t.Fatal(err)
	}
	if !*f.Policies.DynamicPAMT || f.Policies.HugePages != "off" || f.Policies.SplitOrder != "sept_first" {
		t.Errorf("back to %s: %+v: want the profile's dynamic_pamt, the file's hugepages, --policy's split_order", kernel.Default, f.Policies)
	}
}

// A setting the profile's tree does not have is exit 2 naming both.
func TestKernelInvalidCombinationExits2(t *testing.T) {
	plain := writeScenario(t, "tds: [{memory: 64M}]\n")
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"--policy 2M on 6.19", []string{"--kernel", "6.19", "--policy", "hugepages=2M", plain}, []string{"hugepages", "--kernel 6.19"}},
		{"--policy dynamic_pamt on 7.0", []string{"--kernel", "7.0", "--policy", "dynamic_pamt=true", plain}, []string{"dynamic_pamt", "--kernel 7.0"}},
		{"file 1G on 6.19", []string{"--kernel", "6.19", filepath.Join("..", "..", "examples", "hugepages-1g.yaml")}, []string{"policies.hugepages", "--kernel 6.19"}},
		{"file kernel: and hugepages", []string{writeScenario(t, "kernel: dpamt-v6\npolicies: {hugepages: 2M}\ntds: [{memory: 64M}]\n")}, []string{"policies.hugepages", "kernel: dpamt-v6"}},
		{"per-VM attributes under exclusive", []string{"--kernel", "gmem-inplace-v8", writeScenario(t, "tds: [{memory: 64M, conversion: kvm}]\n")}, []string{"tds[0].conversion", "gmem-inplace-v8"}},
		{"unknown kernel", []string{"--kernel", "5.10", plain}, []string{"5.10"}},
		{"unknown kernel in file", []string{writeScenario(t, "kernel: 5.10\ntds: [{memory: 64M}]\n")}, []string{"kernel", "5.10"}},
	} {
		code, _, errs := run(append([]string{"run"}, c.args...)...)
		if code != exitBadInput || strings.Count(errs, "\n") != 1 {
			t.Errorf("%s: exit %d, stderr %q: want exit 2 and one line", c.name, code, errs)
		}
		for _, w := range c.want {
			if !strings.Contains(errs, w) {
				t.Errorf("%s: stderr %q does not name %q", c.name, errs, w)
			}
		}
	}
}

// A merged profile's default run: no DEMOTE, no PAMT.ADD, no 2 MiB
// private mapping.
func TestMergedKernelDefaultRun(t *testing.T) {
	if testing.Short() {
		t.Skip("the default scenario twice")
	}
	for _, p := range kernel.All() {
		if !p.Merged {
			continue
		}
		r := runKernel(t, "--kernel", p.Name)
		if r.Seamcalls["TDH.MEM.PAGE.DEMOTE"] != 0 || r.Seamcalls["TDH.PHYMEM.PAMT.ADD"] != 0 || r.MappingsPeak["2M"] != 0 || r.MappingsPeak["1G"] != 0 {
			t.Errorf("%s: DEMOTE %d, PAMT.ADD %d, peak %v", p.Name, r.Seamcalls["TDH.MEM.PAGE.DEMOTE"], r.Seamcalls["TDH.PHYMEM.PAMT.ADD"], r.MappingsPeak)
		}
	}
}

// compare --kernel A --kernel B FILE runs FILE under both and names them.
func TestCompareKernels(t *testing.T) {
	file := writeScenario(t, "tds: [{memory: 64M}]\ntimeline: [{boot: {accept: eager}}]\n")
	code, out, errs := run("compare", "--json", "--kernel", "6.19", "--kernel", kernel.Default, file)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	c := decodeCompare(t, out)
	if !strings.HasSuffix(c.NameA, "kernel=6.19") || !strings.HasSuffix(c.NameB, "kernel="+kernel.Default) {
		t.Errorf("names %q, %q", c.NameA, c.NameB)
	}
	differ := c.differ()
	if !differ["mappings_peak 2M"] || !differ["memory pamt_dynamic_bytes_peak"] {
		t.Errorf("2M mappings and dynamic PAMT should differ between 6.19 and %s: %v", kernel.Default, differ)
	}
	for _, bad := range [][]string{
		{"compare", "--kernel", "6.19", "--kernel", "7.0", "--kernel", "dpamt-v6", file},
		{"compare", "--kernel", "6.19", "--kernel", "7.0", file, file},
		{"compare", "--kernel", "6.19", file},
	} {
		if code, _, _ := run(bad...); code != exitBadInput {
			t.Errorf("%v: exit %d, want 2", bad, code)
		}
	}
}

// Every example runs under every profile it is valid for; where the
// profile rejects a setting the example makes, the load says so (an
// InputError) before any work.
func TestExamplesUnderEveryKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("every example under every profile")
	}
	files, _ := filepath.Glob(filepath.Join("..", "..", "examples", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no examples")
	}
	// Each pair is a subtest run in parallel: one core each, so the
	// suite's longest test takes half the time on CI's two cores.
	for _, file := range files {
		for _, p := range kernel.All() {
			if filepath.Base(file) == "linux-boot-8g-8vcpu.yaml" && fixesHugePagesOff(p) {
				continue // its 4 GiB twin runs: 2M accepts fall back to 4K, a long run of nothing new
			}
			t.Run(filepath.Base(file)+"/"+p.Name, func(t *testing.T) {
				t.Parallel()
				f, err := scenario.Load(file)
				if err != nil {
					t.Skipf("%s: %v", file, err) // e.g. firmware absent
				}
				if err := f.SetKernel(p.Name); err != nil {
					if !errors.As(err, new(*scenario.InputError)) {
						t.Errorf("%s under %s: %v", file, p.Name, err)
					}
					return
				}
				r, err := drive(f, scenario.Options{}, nil, nil, nil)
				if r == nil {
					t.Fatalf("%s under %s: no report: %v", file, p.Name, err)
				}
				if r.Kernel != p.Name {
					t.Errorf("%s under %s: report kernel %q", file, p.Name, r.Kernel)
				}
			})
		}
	}
}

// fixesHugePagesOff reports whether profile p maps private memory at 4K
// only (hugepages=off, fixed).
func fixesHugePagesOff(p kernel.Profile) bool {
	for _, pol := range p.Policies {
		if pol.Key == "hugepages" && pol.Value == "off" {
			return true
		}
	}
	return false
}
