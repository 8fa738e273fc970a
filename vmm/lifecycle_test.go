package vmm

import (
	"fmt"
	"hash"
	"hash/fnv"
	"runtime"
	"sync"
	"testing"

	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/internal/mrtdvec"
	"github.com/tdxsim/tdxsim/kvm/mmu"
)

// e2eOptions is the end-to-end TD: a measured 2 MiB image, two
// vCPUs accepting 64 MiB of private memory, 8 MiB converted to shared and
// back, a 4 MiB punch hole, teardown; huge pages off (mainline), so every
// figure is a 4K one.
func e2eOptions(seed uint64) LifecycleOptions {
	return LifecycleOptions{HostBytes: 2 << 30, DynamicPAMT: true, Packages: 2, MemBytes: 128 << 20, VCPUs: 2,
		ImageBytes: 2 << 20, AcceptBytes: 64 << 20, ConvertBytes: 8 << 20, PunchBytes: 4 << 20, Seed: seed,
		MMU: mmu.Config{HugePages: mmu.HugePagesOff}}
}

// checkE2E asserts everything that must hold on every seed.
func checkE2E(o LifecycleOptions, c *event.Counter, res LifecycleResult, mrtd []byte) []string {
	var bad []string
	fail := func(f string, a ...any) { bad = append(bad, fmt.Sprintf(f, a...)) }
	const (
		imagePages  = 512
		acceptPages = 16384
		convPages   = 2048
		punchPages  = 1024
	)
	calls := c.Calls()
	want := map[string]uint64{
		"TDH.MNG.CREATE": 1, "TDH.MNG.KEY.CONFIG": 2, "TDH.MNG.ADDCX": 6, "TDH.MNG.INIT": 1,
		"TDH.VP.CREATE": 2, "TDH.VP.ADDCX": 10, "TDH.VP.INIT": 2,
		"TDH.MEM.PAGE.ADD": imagePages, "TDH.MR.EXTEND": imagePages * 16, "TDH.MR.FINALIZE": 1,
		// Every accepted page is AUGed once, the converted ones twice.
		"TDH.MEM.PAGE.AUG": acceptPages + convPages,
		// Every private page is removed once: at conversion, punch, or
		// the guest_memfd release at teardown.
		"TDH.MEM.PAGE.REMOVE": imagePages + acceptPages + convPages, "TDH.MEM.RANGE.BLOCK": imagePages + acceptPages + convPages,
		"TDH.PHYMEM.PAGE.WBINVD": imagePages + acceptPages + convPages, "TDH.MEM.TRACK": imagePages + acceptPages + convPages,
		// 1 PDPT + 1 PD + 33 PTs for 64 MiB at GPA 0 and the image at the top of 128 MiB.
		"TDH.MEM.SEPT.ADD": 35,
		"TDH.VP.FLUSH":     2, "TDH.MNG.VPFLUSHDONE": 1, "TDH.PHYMEM.CACHE.WB": 2, "TDH.MNG.KEY.FREEID": 1,
		// S-EPT pages, TDCS, TDR, TDVPR and TDVPX.
		"TDH.PHYMEM.PAGE.RECLAIM": 35 + 6 + 1 + 2*6,
	}
	for leaf, n := range want {
		if calls[leaf] != n {
			fail("%s: %d calls, want %d", leaf, calls[leaf], n)
		}
	}
	if calls["TDH.PHYMEM.PAMT.ADD"] == 0 || calls["TDH.PHYMEM.PAMT.ADD"] != calls["TDH.PHYMEM.PAMT.REMOVE"] {
		fail("PAMT.ADD %d vs PAMT.REMOVE %d", calls["TDH.PHYMEM.PAMT.ADD"], calls["TDH.PHYMEM.PAMT.REMOVE"])
	}
	for leaf, n := range c.Failed() {
		if leaf != "TDG.MEM.PAGE.ACCEPT" && leaf != "TDH.VP.ENTER" {
			fail("%d failed %s", n, leaf)
		}
	}
	if string(res.MRTD) != string(mrtd) {
		fail("MRTD %x, want %x", res.MRTD, mrtd)
	}
	if res.LeakedPages != 0 || res.ChargedAfter.Charged+res.ChargedAfter.Uncharged != 0 || res.HKIDsInUse != 0 {
		fail("after teardown: %d pages leaked, %+v charged, %d HKIDs in use", res.LeakedPages, res.ChargedAfter, res.HKIDsInUse)
	}
	if res.MMU.PeakMapped[1][0] != imagePages+acceptPages || res.MMU.Mapped != [2][3]int64{} {
		fail("mirror leaves peak %d (want %d), at the end %v", res.MMU.PeakMapped[1][0], imagePages+acceptPages, res.MMU.Mapped)
	}
	if res.MMU.PeakMapped[0][0] != convPages {
		fail("direct root peak %d leaves, want %d", res.MMU.PeakMapped[0][0], convPages)
	}
	if res.SEPTPagesPeak != 35 || res.TD.SEPTPagesReclaimed != 35 {
		fail("S-EPT pages: peak %d, reclaimed %d, want 35", res.SEPTPagesPeak, res.TD.SEPTPagesReclaimed)
	}
	if res.VMM.ToShared != 4 || res.VMM.ToPrivate != 4 {
		fail("conversions %d to shared, %d to private; want 4 and 4 (2 MiB chunks)", res.VMM.ToShared, res.VMM.ToPrivate)
	}
	if res.Bugged != "" || len(res.GuestErrors) > 0 || len(res.LockDep) > 0 {
		fail("bugged %q, guest errors %v, lockdep %v", res.Bugged, res.GuestErrors, res.LockDep)
	}
	for _, v := range c.Violations() {
		fail("violation %s: %s", v.Name, v.Detail)
	}
	return bad
}

// TestEndToEnd runs the TD over 200 deterministic-scheduler seeds (20 with
// -short), on all cores, and checks SEAMCALL counts, the MRTD, the mapping
// and S-EPT figures, and that teardown leaves nothing behind.
func TestEndToEnd(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 20
	}
	o := e2eOptions(0)
	mrtd := mrtdvec.Hand([]mrtdvec.Region{{GPA: o.ImageGPA(), Data: o.Image(), Measure: true}})
	var (
		mu       sync.Mutex
		failures []string
		steps    = map[uint64]bool{} // distinct interleavings
		wg       sync.WaitGroup
		next     = make(chan uint64)
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range next {
				c := event.NewCounter()
				order := &threadOrder{h: fnv.New64a()}
				res, err := Lifecycle(e2eOptions(seed), event.Tee{c, order})
				bad := checkE2E(o, c, res, mrtd)
				if err != nil {
					bad = append(bad, err.Error())
				}
				mu.Lock()
				steps[order.h.Sum64()] = true
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
	if len(steps) < seeds/2 {
		t.Errorf("%d seeds gave only %d distinct interleavings", seeds, len(steps))
	}
	t.Logf("%d seeds, %d distinct interleavings", seeds, len(steps))
}

// threadOrder fingerprints an interleaving: which thread emitted each event.
type threadOrder struct{ h hash.Hash64 }

func (o *threadOrder) Emit(e event.Event) {
	o.h.Write([]byte{byte(e.Thread), byte(e.Thread >> 8)})
}

// The same seed gives the same run, step for step and call for call.
func TestLifecycleDeterministic(t *testing.T) {
	o := e2eOptions(42)
	o.AcceptBytes, o.ConvertBytes, o.PunchBytes = 8<<20, 2<<20, 1<<20
	a, b := event.NewCounter(), event.NewCounter()
	ra, err := Lifecycle(o, a)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := Lifecycle(o, b)
	if err != nil {
		t.Fatal(err)
	}
	if ra.Steps != rb.Steps || fmt.Sprint(a.Calls()) != fmt.Sprint(b.Calls()) || fmt.Sprint(ra.MMU) != fmt.Sprint(rb.MMU) {
		t.Errorf("seed 42 ran twice differently: %d vs %d steps", ra.Steps, rb.Steps)
	}
}

func TestLifecycleBadOptions(t *testing.T) {
	for _, o := range []LifecycleOptions{
		{MemBytes: 128 << 20, VCPUs: 0},
		{MemBytes: 3 << 20, VCPUs: 1},
		{MemBytes: 128 << 20, VCPUs: 1, AcceptBytes: 100},
		{MemBytes: 128 << 20, VCPUs: 1, AcceptBytes: 4 << 20, ConvertBytes: 4 << 20, PunchBytes: 4 << 20},
		{MemBytes: 8 << 20, VCPUs: 1, AcceptBytes: 8 << 20, ImageBytes: 4096},
	} {
		if _, err := Lifecycle(o, nil); err == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
}
