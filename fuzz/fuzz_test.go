package fuzz

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/internal/testkit"
	"github.com/tdxsim/tdxsim/scenario"
)

// A short default-policy campaign finds nothing.
func TestDefaultCampaignClean(t *testing.T) {
	runs := testRuns(60, 15)
	sum := mustCampaign(t, Config{Seed: 1, Runs: runs})
	if len(sum.Violations) != 0 {
		for _, fd := range sum.Findings {
			f, _ := Generate(fd.Seed, Options{})
			small := Shrink(f, fd.Broken[0], 0)
			b, _ := Reproducer(fd.Seed, fd.Broken[0], small)
			t.Errorf("seed %d breaks %v:\n%s\n%s", fd.Seed, fd.Broken, b, RunOne(small).Report.Violations)
		}
	}
	if sum.Runs != runs || sum.Steps == 0 || sum.Interleavings == 0 {
		t.Errorf("summary %+v", sum)
	}
	// Every transition a run made is one the module's table lists, and
	// every lock-order edge is in the kernel's order.
	cv := sum.Coverage
	if len(cv.Transitions.Other) > 0 || len(cv.LockEdges.Other) > 0 {
		t.Errorf("outside the model's lists: transitions %v, lock edges %v", cv.Transitions.Other, cv.LockEdges.Other)
	}
	if cv.Transitions.Of != len(transitionNames()) || cv.LockEdges.Of != 6 || cv.StepKinds.Of != len(scenario.StepKinds()) ||
		len(cv.Transitions.Seen) == 0 || len(cv.LockEdges.Seen) == 0 || len(cv.StepKinds.Seen) < 5 {
		t.Errorf("coverage %+v", cv)
	}
}

// campaignInject is the fault injection of the README's hostile campaign
// (tdxsim fuzz --hostile --inject ...): TDX_OPERAND_BUSY on 5% of the
// fault path's AUGs and SEPT.ADDs (KVM retries the fault), on every
// few BLOCKs, TRACKs and REMOVEs (tdh_do_no_vcpus kicks the vCPUs and
// retries once), and the 200th page-table page allocation failing (a
// top-up short of its minimum is -ENOMEM to the faulting path).
var campaignInject = [][2]string{
	{"busy", "0.05"}, {"busy_leaves", "TDH.MEM.PAGE.AUG,TDH.MEM.SEPT.ADD"},
	{"fail", "TDH.MEM.RANGE.BLOCK:3:7:TDX_OPERAND_BUSY"}, {"fail", "TDH.MEM.TRACK:2:5:TDX_OPERAND_BUSY"},
	{"fail", "TDH.MEM.PAGE.REMOVE:4:9:TDX_OPERAND_BUSY"}, {"alloc", "kvm.mmu_shadow_page_cache:200"},
}

// A hostile-guest campaign with faults injected (BUSY on the fault path's
// leaves and, once in a while, on the zap path's; a failed page-table
// top-up) finds nothing: the host answers every guest operation and every
// fault the way KVM does and keeps every invariant.
func TestHostileCampaignClean(t *testing.T) {
	sum := mustCampaign(t, Config{Seed: 1, Runs: testRuns(30, 8), Hostile: true, Inject: campaignInject})
	if len(sum.Violations) != 0 {
		t.Errorf("violations %v; findings %+v", sum.Violations, sum.Findings)
	}
	if sum.GuestOps == 0 || sum.Injected["TDX_OPERAND_BUSY"] == 0 || sum.Injected["TDH.MEM.TRACK TDX_OPERAND_BUSY"] == 0 {
		t.Errorf("nothing hostile or injected: %d ops, %v", sum.GuestOps, sum.Injected)
	}
}

// Failures the fuzzer found in the model, kept after the fix: each
// reproducer must now run clean.
//   - hostile-accept-level-race: a fault chose its level before taking
//     mmu_lock, so it could install a 2M leaf over a range a racing 4K
//     accept had just split and inhibited; the next 4K accept there hit
//     KVM_BUG_ON. The level is now chosen under mmu_lock, as
//     kvm_mmu_hugepage_adjust() is in kvm_tdp_mmu_map().
//   - hostile-lazy-accept-retry: a vCPU that waited for another to accept
//     a 2 MiB unit did not look again, and read a page the other had
//     not reached (#VE); it now retries as accept_memory() does.
//   - hostile-inplace-folio-clear: the first fault on a never-used page of
//     a HugeTLB folio merged back after in-place conversion cleared the
//     whole folio, wiping what the guest had written to its other pages
//     (and, on any TD, a measured image's pages): only pages not up to
//     date are cleared now.
//   - hostile-already-accepted-keeps-writes: a lazy accept that got
//     TDX_PAGE_ALREADY_ACCEPTED (a racing hostile vCPU had accepted the
//     unit) booked the pages as zeroed, forgetting what the guest had
//     written since; the next read of such a page "failed". Only an accept
//     that succeeds zeroes now.
func TestRegressions(t *testing.T) {
	eachReproducer(t, "regressions", func(p string, o Outcome) {
		if len(o.Broken) != 0 {
			t.Errorf("%s: %v\n%v", p, o.Broken, o.Report.Violations)
		}
	})
}

// A race in a posted series that a campaign found under its profile
// stays found, and the series' own later fix closes it: the Dynamic PAMT
// v4 put race (testdata/series/dpamt-v4-put-race.yaml, docs/kernels.md)
// ends in KVM_BUG_ON under hugepage-v3+dpamt-v4, and the same scenario
// under dpamt-v6 (atomic_dec_and_lock()) runs clean on every scheduler
// seed tried.
func TestSeriesFindings(t *testing.T) {
	p := filepath.Join("testdata", "series", "dpamt-v4-put-race.yaml")
	f, err := scenario.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if o := RunOne(f); !slices.Contains(o.Broken, check.NoKVMBug) {
		t.Fatalf("under %s: broke %v, want %s", f.Profile().Name, o.Broken, check.NoKVMBug)
	}
	if err := f.SetKernel("dpamt-v6"); err != nil {
		t.Fatal(err)
	}
	for seed := uint64(1); seed <= uint64(testkit.Seeds(20, 4)); seed++ {
		f.Schedule.Seed = &seed
		if o := RunOne(f); len(o.Broken) != 0 {
			t.Errorf("dpamt-v6, scheduler seed %d: %v\n%v", seed, o.Broken, o.Report.Violations)
		}
	}
}

// Each hazard the seeds predict, as the fuzzer found and shrank it, stays
// caught: the reproducer breaks its invariant under its policy, and the
// same file with the upstream policy runs clean.
func TestHazardReproducers(t *testing.T) {
	cases := []struct {
		file, policy, upstream string
		invariants             []string
	}{
		{"pin_private_pages.yaml", "pin_private_pages", "false", []string{check.ConversionProgress}},
		{"populate-gmem_populate.yaml", "populate", "map_private_pfn", []string{check.LockOrder, check.NoDeadlock}},
		{"max_order_from-folio.yaml", "max_order_from", "gmem", []string{check.MappingLevel}},
		{"split_order-folio_first.yaml", "split_order", "sept_first", []string{check.MappingLevel}},
		{"external_spt_cache-tdx_prealloc.yaml", "external_spt_cache", "kvm", []string{check.CachePool, check.Charged}},
		{"zap_private_on_notifier.yaml", "zap_private_on_notifier", "false", []string{check.GuestReadsBack}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			f, err := scenario.Load(filepath.Join("testdata", "hazards", c.file))
			if err != nil {
				t.Fatal(err)
			}
			if n := countSteps(f.Timeline); n > 30 {
				t.Errorf("reproducer has %d steps, want at most 30", n)
			}
			o := RunOne(f)
			for _, inv := range c.invariants {
				if !slices.Contains(o.Broken, inv) {
					t.Errorf("%s does not break %s: %v", c.file, inv, o.Broken)
				}
			}
			if err := f.SetPolicy(c.policy, c.upstream); err != nil {
				t.Fatal(err)
			}
			if o := RunOne(f); len(o.Broken) != 0 {
				t.Errorf("with %s=%s: %v\n%v", c.policy, c.upstream, o.Broken, o.Report.Violations)
			}
		})
	}
}

// The same seed generates the same scenario, byte for byte, and runs the
// same interleaving.
func TestGenerateDeterministic(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		a, err1 := Generate(seed, Options{})
		b, err2 := Generate(seed, Options{})
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		x, _ := scenario.Marshal(&a.Scenario)
		y, _ := scenario.Marshal(&b.Scenario)
		if string(x) != string(y) {
			t.Fatalf("seed %d generated two scenarios", seed)
		}
		if RunOne(a).Schedule != RunOne(b).Schedule {
			t.Fatalf("seed %d ran two interleavings", seed)
		}
	}
}

// go test -fuzz=FuzzScenario ./fuzz drives the same generator: every
// default-policy scenario must run clean.
func FuzzScenario(f *testing.F) {
	for _, s := range []uint64{1, 2, 3} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		sc, err := Generate(seed, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if o := RunOne(sc); len(o.Broken) != 0 {
			b, _ := Reproducer(seed, o.Broken[0], sc)
			t.Fatalf("seed %d breaks %v: %v\n%s", seed, o.Broken, o.Report.Violations, b)
		}
	})
}

// A campaign's summary, findings and reproducers do not depend on the
// worker count: runs are merged in seed order.
func TestWorkersSameSummary(t *testing.T) {
	var got []*Summary
	for _, w := range []int{1, 3} {
		sum := mustCampaign(t, Config{Seed: 7, Runs: testRuns(12, 6), Workers: w, Policies: [][2]string{{"populate", "gmem_populate"}}, ShrinkRuns: 40})
		if sum.Workers != w {
			t.Errorf("workers %d, want %d", sum.Workers, w)
		}
		sum.ElapsedMS, sum.RunsPerSec, sum.InterleavingsPerSec, sum.Workers = 0, 0, 0, 0
		for i := range sum.Findings {
			sum.Findings[i].FoundAfter = 0
		}
		got = append(got, sum)
	}
	a, _ := json.Marshal(got[0])
	b, _ := json.Marshal(got[1])
	if string(a) != string(b) {
		t.Errorf("1 worker:\n%s\n3 workers:\n%s", a, b)
	}
}

// Runs the fuzzer once classed as violations that are the kernel's
// response to the injected fault they carry: each must now end as a
// kernel_response with no violation.
//   - split-under-dead-td: after an injected TDH.MEM.PAGE.REMOVE failure
//     killed the TD, guest_memfd split a folio its S-EPT still mapped at
//     2M (the same no-pin window as a free of such a page).
//   - create-fails-busy-cleanup: a BUSY on the clean-up's
//     TDH.PHYMEM.PAMT.REMOVE, retried to success, hid the injected
//     TDH.MNG.CREATE failure the KVM_BUG_ON answers; a thread now
//     remembers the failure a retried one interrupted.
func TestKernelResponseReproducers(t *testing.T) {
	eachReproducer(t, "responses", func(p string, o Outcome) {
		if len(o.Broken) != 0 || o.Report.Outcome != check.ClassKernelResponse {
			t.Errorf("%s: outcome %s, broken %v\n%v", p, o.Report.Outcome, o.Broken, o.Report.Violations)
		}
	})
}
