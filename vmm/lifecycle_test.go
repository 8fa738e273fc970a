package vmm_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/tdxsim/tdxsim/internal/testkit"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/vmm"
)

// testdata/end-to-end.yaml is the whole-TD run through the full stack
// (VMM, KVM, TDP MMU, KVM's TDX code, guest_memfd, the TDX module): build
// with a measured image, two vCPUs accepting and touching 64 MiB, 8 MiB
// converted to shared and back, a 4 MiB punch hole, teardown. The file's
// expect section pins every SEAMCALL count and the MRTD; checkE2E adds
// what the report shows beyond those.

const (
	imagePages  = 512   // 2 MiB at 126 MiB
	acceptPages = 16384 // 64 MiB from GPA 0
	convPages   = 2048  // 8 MiB
	septPages   = 35    // 1 PDPT + 1 PD + 33 PTs
)

// endToEndMRTD is the hand-computed MRTD of end-to-end.yaml's image.
func endToEndMRTD() string {
	return handMRTD(region{gpa: 126 << 20, data: bytes.Repeat([]byte{0x5a}, 2<<20), measure: true})
}

// checkE2E asserts everything that must hold on every seed.
func checkE2E(r *report.Run, mrtd string) []string {
	bad := problems(r)
	fail := func(f string, a ...any) { bad = append(bad, fmt.Sprintf(f, a...)) }
	calls := r.Seamcalls
	if calls["TDH.PHYMEM.PAMT.ADD"] == 0 || calls["TDH.PHYMEM.PAMT.ADD"] != calls["TDH.PHYMEM.PAMT.REMOVE"] {
		fail("PAMT.ADD %d vs PAMT.REMOVE %d", calls["TDH.PHYMEM.PAMT.ADD"], calls["TDH.PHYMEM.PAMT.REMOVE"])
	}
	for leaf, n := range r.SeamcallsFailed {
		if leaf != "TDG.MEM.PAGE.ACCEPT" && leaf != "TDH.VP.ENTER" {
			fail("%d failed %s", n, leaf)
		}
	}
	if r.MRTD != mrtd {
		fail("MRTD %s, want %s", r.MRTD, mrtd)
	}
	// Mirror leaves: the image and every accepted page at the peak; the
	// teardown check (teardown_reclaims_all) sees that none is left.
	if r.MappingsPeak["4K"] != imagePages+acceptPages || r.MappingsPeak["2M"]+r.MappingsPeak["1G"] != 0 {
		fail("mirror leaves peak %v, want %d 4K ones", r.MappingsPeak, imagePages+acceptPages)
	}
	if r.SharedPeak != convPages {
		fail("direct root peak %d leaves, want %d", r.SharedPeak, convPages)
	}
	if r.Memory.SEPTPages != septPages || r.Teardown.SEPTPagesReclaimed != septPages {
		fail("S-EPT pages: peak %d, reclaimed %d, want %d", r.Memory.SEPTPages, r.Teardown.SEPTPagesReclaimed, septPages)
	}
	if r.Conversions.ToShared != 4 || r.Conversions.ToPrivate != 4 {
		fail("conversions %d to shared, %d to private; want 4 and 4 (2 MiB chunks)", r.Conversions.ToShared, r.Conversions.ToPrivate)
	}
	// Every accepted page is touched, the converted ones again once back.
	if r.Guest.Touches != acceptPages+convPages || r.Guest.SharedTouches != convPages {
		fail("guest touched %d private and %d shared pages, want %d and %d", r.Guest.Touches, r.Guest.SharedTouches, acceptPages+convPages, convPages)
	}
	return bad
}

// TestEndToEnd runs the TD over 200 deterministic-scheduler seeds (20 with
// -short), on all cores, and checks SEAMCALL counts, the MRTD, the mapping
// and S-EPT figures, and that teardown leaves nothing behind.
func TestEndToEnd(t *testing.T) {
	seeds := testkit.Seeds(200, 20)
	mrtd := endToEndMRTD()
	var (
		mu        sync.Mutex
		failures  []string
		schedules = map[string]bool{} // distinct interleavings
		wg        sync.WaitGroup
		next      = make(chan uint64)
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range next {
				r := runScenario(t, "end-to-end.yaml", seed)
				bad := checkE2E(r, mrtd)
				mu.Lock()
				schedules[r.Schedule] = true
				for _, b := range bad {
					failures = append(failures, fmt.Sprintf("seed %d: %s", seed, b))
				}
				mu.Unlock()
			}
		}()
	}
	for seed := range uint64(seeds) {
		next <- seed
	}
	close(next)
	wg.Wait()
	for i, f := range failures {
		if i == 20 {
			t.Errorf("... and %d more", len(failures)-20)
			break
		}
		t.Error(f)
	}
	if len(schedules) < seeds/2 {
		t.Errorf("%d seeds gave only %d distinct interleavings", seeds, len(schedules))
	}
	t.Logf("%d seeds, %d distinct interleavings", seeds, len(schedules))
}

// The same seed gives the same run, step for step and call for call: the
// whole report, schedule hash included, is the same.
func TestEndToEndDeterministic(t *testing.T) {
	a := runScenario(t, "end-to-end.yaml", 42)
	b := runScenario(t, "end-to-end.yaml", 42)
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if a.Schedule == "" || !bytes.Equal(ja, jb) {
		t.Errorf("seed 42 ran twice differently: %d vs %d steps, schedule %q vs %q", a.Steps, b.Steps, a.Schedule, b.Schedule)
	}
}

// vmm.Create refuses a TD it cannot build, before KVM_CREATE_VM.
func TestCreateBadConfig(t *testing.T) {
	host, err := vmm.NewHost(vmm.HostConfig{Bytes: 1 << 30}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []vmm.Config{
		{MemBytes: 128 << 20, VCPUs: 0},
		{MemBytes: 3 << 20, VCPUs: 1},
		{MemBytes: 0, VCPUs: 1},
		{MemBytes: 4 << 20, VCPUs: 1, Slots: []vmm.Slot{{GPA: 0, Size: 4 << 20}, {GPA: 2 << 20, Size: 2 << 20}}},
		{MemBytes: 4 << 20, VCPUs: 1, Slots: []vmm.Slot{{GPA: 0, Size: 2 << 20}}},
		{MemBytes: 2 << 20, VCPUs: 1, Slots: []vmm.Slot{{GPA: 1 << 20, Size: 2 << 20}}},
		{MemBytes: 2 << 20, VCPUs: 1, Slots: []vmm.Slot{{GPA: 1 << 47, Size: 2 << 20}}},
	} {
		var got error
		s := sched.New(sched.Deterministic, 1, nil)
		s.Go("vmm", func(th *sched.Thread) {
			if m, err := vmm.Create(th, host, cfg); err == nil {
				_ = m.Teardown(th)
			} else {
				got = err
			}
		})
		if err := s.Run(); err != nil {
			t.Fatal(err)
		}
		if got == nil {
			t.Errorf("%+v: created", cfg)
		}
	}
	if n := host.HKIDsInUse(); n != 0 {
		t.Errorf("%d HKIDs in use after the refused creates", n)
	}
}
