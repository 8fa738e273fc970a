package bench

import (
	"strings"
	"testing"
)

// The fault paths allocate nothing per fault (only per page table, folio
// or 2 MiB record), and model state per mapped page stays within bounds
// near the targets (48 B per 4K page, 2 KiB per 2M page).
func TestFaultPathFigures(t *testing.T) {
	for _, c := range []struct {
		huge            bool
		maxBytesPerPage float64
		// maxAllocs: none per 4K fault; a 2M fault may make its
		// per-folio record (a guest_memfd chunk) and no more.
		maxAllocs float64
	}{{false, 80, 0.05}, {true, 2048, 2}} {
		mem := uint64(256 << 20)
		if c.huge {
			mem = 16 << 30
		}
		r, err := Faults(Options{MemBytes: mem, Huge: c.huge, Parallel: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %.0f/s, %.1f B/page, %.3f allocs per fault", r.Name, r.OpsPerSec, r.BytesPerPage, r.AllocsPerOp)
		if r.Ops == 0 || r.OpsPerSec <= 0 {
			t.Errorf("%s: %+v", r.Name, r)
		}
		if r.AllocsPerOp > c.maxAllocs {
			t.Errorf("%s: %.3f heap allocations per fault: something on the path allocates per page", r.Name, r.AllocsPerOp)
		}
		if r.BytesPerPage > c.maxBytesPerPage {
			t.Errorf("%s: %.1f bytes of model state per page, want at most %.0f", r.Name, r.BytesPerPage, c.maxBytesPerPage)
		}
	}
}

// A quick bench run (one round) measures every figure under its JSON
// name, with both ratios where their figures were measured.
func TestRunQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("a quick bench run takes a few seconds")
	}
	rep, err := Run(Config{Quick: true, Rounds: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"fault_4k", "fault_2m", "convert_4k_in_2m", "build_64m", "teardown_per_gib", "sched_switch", "real_kvm_fault_4k"} {
		r, ok := rep.Result(name)
		switch {
		case !ok:
			t.Errorf("no %s", name)
		case name == "real_kvm_fault_4k" && strings.HasPrefix(r.Note, "not measured"):
			t.Logf("%s: %s", name, r.Note)
		case r.OpsPerSec <= 0:
			t.Errorf("%s: %+v", name, r)
		}
	}
	if rep.Cores < 1 {
		t.Errorf("cores %d", rep.Cores)
	}
	model, _ := rep.Result("fault_4k")
	real, _ := rep.Result("real_kvm_fault_4k")
	if (model.VsRealKVM != nil) != (real.Median != nil) {
		t.Errorf("vs_real_kvm %v with real median %v", model.VsRealKVM, real.Median)
	}
	if two, _ := rep.Result("fault_4k_2vcpus"); two.VsOneVCPU == nil {
		t.Errorf("fault_4k_2vcpus has no vs_one_vcpu")
	}
}
