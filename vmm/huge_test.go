package vmm

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/guest"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/internal/testkit"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// hugeConvert is the huge-page workload: a 1 GiB TD with 2 MiB
// pages and a measured 2 MiB image at the top boots by accepting all its
// memory 2M-first, then its vCPUs concurrently convert randomly placed
// 4 KiB pages to shared and back, re-accept them, and check what they
// read; then the TD is torn down.
type hugeConvert struct {
	seed     uint64
	vcpus    int
	pages    int // 4 KiB pages converted
	mem      uint64
	huge     mmu.HugePages
	converts []uint64 // the GPAs, sorted
}

// hugeResult is what the run saw at the end of the workload (before
// teardown) and after teardown.
type hugeResult struct {
	Mapped      [3]int64 // mirror leaves by level at the end of the workload
	SEPTPages   int
	DPAMTRanges int
	DPAMTWant   int
	PAMT        tdxmodule.PAMTBytes
	Disagree    []string // mirror vs S-EPT, DPAMT refcounts
	Leaked      int64
	Charged     hostmem.Usage
	Calls       map[string]uint64
	Splits      [3]int64
	GuestErrors []string
	Violations  []event.Event
	LockDep     []sched.Report
}

func (h *hugeConvert) run() (hugeResult, error) {
	var res hugeResult
	c := event.NewCounter()
	cfg := Config{MemBytes: h.mem, VCPUs: h.vcpus, TD: tdx.Config{MMU: mmu.Config{HugePages: h.huge}}}
	host, err := NewHost(HostConfig{Bytes: 4 << 30, DynamicPAMT: true, Packages: 2, TDs: []Config{cfg}}, c)
	if err != nil {
		return res, err
	}
	mem, mod := host.Mem, host.Mod
	free0 := int64(mem.FreePages())
	imageGPA := h.mem - addr.Size2M
	rng := rand.New(rand.NewPCG(h.seed, 0x5eed))
	picked := map[uint64]bool{}
	for len(picked) < h.pages {
		picked[rng.Uint64N(imageGPA/addr.PageSize)*addr.PageSize] = true
	}
	h.converts = h.converts[:0]
	for g := range picked {
		h.converts = append(h.converts, g)
	}
	sort.Slice(h.converts, func(i, j int) bool { return h.converts[i] < h.converts[j] })
	s := sched.New(sched.Deterministic, h.seed, c)
	var first firstError
	setErr := first.set
	s.Go("vmm", func(t *sched.Thread) {
		m, err := Create(t, host, cfg)
		if err != nil {
			setErr(err)
			return
		}
		img := make([]byte, addr.Size2M)
		for i := range img {
			img[i] = byte(i * 13)
		}
		if err := m.LoadImage(t, []Region{{GPA: imageGPA, Data: img, Measure: true}}); err != nil {
			setErr(err)
			return
		}
		if _, err := m.Finalize(t); err != nil {
			setErr(err)
			return
		}
		g, err := guest.New(m.TD, m.VCPUs, guest.Config{RAM: []guest.Range{{GPA: 0, Size: h.mem}}, MaxAcceptLevel: addr.Level2M})
		if err != nil {
			setErr(err)
			return
		}
		defer func() { res.GuestErrors = g.Problems() }()
		// Boot: each vCPU accepts its share of [0, imageGPA), 2M first.
		per := (imageGPA / uint64(h.vcpus)) &^ (addr.Size2M - 1)
		h.onVCPUs(t, m, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
			lo, n := uint64(i)*per, per
			if i == h.vcpus-1 {
				n = imageGPA - lo
			}
			return acceptAndTouch(vt, g, v, lo, n)
		})
		// Conversions: page k goes to vCPU k % vcpus.
		h.onVCPUs(t, m, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
			for k := i; k < len(h.converts); k += h.vcpus {
				if err := g.RoundTrip(vt, v, h.converts[k], addr.PageSize, true); err != nil {
					return err
				}
			}
			return nil
		})
		// Neighbours of converted pages kept what the guest wrote at boot.
		h.onVCPUs(t, m, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
			for k := i; k < len(h.converts); k += h.vcpus {
				for _, n := range []uint64{h.converts[k] - addr.PageSize, h.converts[k] + addr.PageSize} {
					if n >= imageGPA || picked[n] {
						continue
					}
					if err := g.Touch(vt, v, n, false); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if first.err == nil {
			h.measure(m, host, mod, &res)
		}
		setErr(m.Teardown(t))
		res.Charged = mem.Usage(m.VM.Account())
		res.Splits = m.TD.MMU().Stats().Splits
	})
	if err := s.Run(); err != nil {
		return res, err
	}
	res.Leaked = free0 - int64(mem.FreePages())
	res.Calls = c.Calls()
	res.Violations = c.Violations()
	res.LockDep = s.LockDep().Reports()
	if host.DPAMTRanges() != 0 {
		res.Disagree = append(res.Disagree, fmt.Sprintf("%d Dynamic PAMT ranges after teardown", host.DPAMTRanges()))
	}
	return res, first.err
}

// onVCPUs runs fn on every vCPU concurrently and waits.
func (h *hugeConvert) onVCPUs(t *sched.Thread, m *VMM, fn func(vt *sched.Thread, i int, v *tdx.VCPU) error) {
	g := sched.NewGroup(t, "vCPUs done")
	for i, v := range m.VCPUs {
		g.Go(fmt.Sprintf("vcpu%d", i), func(vt *sched.Thread) error {
			defer v.Halt()
			return fn(vt, i, v)
		})
	}
	if err := g.Wait(); err != nil {
		panic(fmt.Sprintf("vCPU failed: %v", err))
	}
}

// measure records the mappings and cross-checks mirror root, S-EPT and
// Dynamic PAMT at the end of the workload.
func (h *hugeConvert) measure(m *VMM, host *tdx.Host, mod *tdxmodule.Module, res *hugeResult) {
	st := m.TD.MMU().Stats()
	res.Mapped = st.Mapped[1]
	if info, ok := mod.TD(m.TD.TDR()); ok {
		res.SEPTPages = info.SEPTPages
	}
	res.PAMT = mod.PAMT()
	m.TD.MMU().Leaves(mmu.MirrorRoot, func(l mmu.Leaf) bool {
		ent, ok := mod.Lookup(m.TD.TDR(), l.GFN.GPA())
		if !ok || ent.Level != l.Level || ent.HPA != l.PFN.HPA() {
			res.Disagree = append(res.Disagree, fmt.Sprintf("mirror %s %s %s vs S-EPT %+v", l.GFN, l.Level, l.PFN, ent))
		}
		return true
	})
	want := m.TD.DPAMTNeeded()
	res.DPAMTRanges, res.DPAMTWant = host.DPAMTRanges(), len(want)
	for r, n := range want {
		if got := host.DPAMTRef(r << 9); got != n {
			res.Disagree = append(res.Disagree, fmt.Sprintf("DPAMT refcount of %s: %d, want %d", (r<<9).HPA(), got, n))
		}
	}
}

// touched2M is how many 2 MiB ranges the converted pages fall in.
func (h *hugeConvert) touched2M() int64 {
	seen := map[uint64]bool{}
	for _, g := range h.converts {
		seen[g>>21] = true
	}
	return int64(len(seen))
}

// check asserts what must hold on every seed.
func (h *hugeConvert) check(res hugeResult) []string {
	var bad []string
	fail := func(f string, a ...any) { bad = append(bad, fmt.Sprintf(f, a...)) }
	touched := h.touched2M()
	ranges := int64((h.mem - addr.Size2M) / addr.Size2M)
	if h.huge == mmu.HugePagesOff {
		touched, ranges = 0, 0 // everything is 4K; nothing splits
	}
	// Untouched ranges stay 2M; touched ones and the image are 4K, every
	// converted page mapped again after its re-accept.
	if want := [3]int64{int64(h.mem/addr.PageSize) - 512*(ranges-touched), ranges - touched, 0}; res.Mapped != want {
		fail("mirror leaves %v, want %v (%d 2M ranges touched)", res.Mapped, want, touched)
	}
	if res.Splits != [3]int64{0, touched, 0} {
		fail("splits %v, want %d at 2M", res.Splits, touched)
	}
	if got := res.Calls["TDH.MEM.PAGE.DEMOTE"]; got != uint64(touched) {
		fail("%d DEMOTEs, want %d", got, touched)
	}
	if got := res.Calls["TDH.MEM.PAGE.PROMOTE"]; got != 0 {
		fail("%d PROMOTEs: the mirror root never merges", got)
	}
	if res.DPAMTRanges != res.DPAMTWant {
		fail("%d DPAMT ranges, want %d", res.DPAMTRanges, res.DPAMTWant)
	}
	for _, d := range res.Disagree {
		fail("%s", d)
	}
	for _, e := range res.GuestErrors {
		fail("guest: %s", e)
	}
	for _, v := range res.Violations {
		fail("violation %s: %s", v.Name, v.Detail)
	}
	for _, r := range res.LockDep {
		fail("lockdep: %v", r)
	}
	if res.Leaked != 0 || res.Charged.Charged+res.Charged.Uncharged != 0 {
		fail("after teardown: %d pages leaked, %+v charged", res.Leaked, res.Charged)
	}
	// Every pair installed, by PAMT.ADD or by a 2M DEMOTE, was removed.
	if add, demote, rm := res.Calls["TDH.PHYMEM.PAMT.ADD"], res.Calls["TDH.MEM.PAGE.DEMOTE"], res.Calls["TDH.PHYMEM.PAMT.REMOVE"]; add+demote != rm {
		fail("PAMT.ADD %d + DEMOTE %d vs PAMT.REMOVE %d", add, demote, rm)
	}
	return bad
}

// TestHugeConvert1000 is the test: a 1 GiB TD booted with 2 MiB
// mappings converts 1000 randomly placed 4 KiB pages to shared and back
// and ends with the right mapping levels, the right Dynamic PAMT pages
// and no leak.
//
// It runs with hugepages=off too and logs the two side by side (go test
// -v -run TestHugeConvert1000 ./vmm): SEAMCALLs, S-EPT pages, PAMT bytes.
func TestHugeConvert1000(t *testing.T) {
	results := map[mmu.HugePages]hugeResult{}
	policies := []mmu.HugePages{mmu.HugePagesOff, mmu.HugePages2M}
	for _, hp := range policies {
		t.Run("hugepages="+hp.String(), func(t *testing.T) {
			h := &hugeConvert{seed: 1, vcpus: 2, pages: 1000, mem: 1 << 30, huge: hp}
			res, err := h.run()
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range h.check(res) {
				t.Error(b)
			}
			results[hp] = res
		})
	}
	if t.Failed() {
		return
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\thugepages=off\thugepages=2M\t\n")
	row := func(name string, f func(hugeResult) any) {
		fmt.Fprintf(tw, "%s\t%v\t%v\t\n", name, f(results[policies[0]]), f(results[policies[1]]))
	}
	leaves := map[string]uint64{}
	for _, r := range results {
		for k := range r.Calls {
			if strings.HasPrefix(k, "TDH.") || strings.HasPrefix(k, "TDG.") {
				leaves[k] = 1
			}
		}
	}
	total := func(r hugeResult) any {
		n := uint64(0)
		for k, v := range r.Calls {
			if strings.HasPrefix(k, "TDH.") {
				n += v
			}
		}
		return n
	}
	for _, k := range event.SortedKeys(leaves) {
		row(k, func(r hugeResult) any { return r.Calls[k] })
	}
	row("SEAMCALLs (TDH.*) total", total)
	row("leaves 4K/2M at the end", func(r hugeResult) any { return fmt.Sprintf("%d/%d", r.Mapped[0], r.Mapped[1]) })
	row("S-EPT pages", func(r hugeResult) any { return r.SEPTPages })
	row("PAMT static bytes", func(r hugeResult) any { return r.PAMT.Static })
	row("PAMT dynamic bytes", func(r hugeResult) any { return r.PAMT.Dynamic })
	row("DPAMT 2M ranges", func(r hugeResult) any { return r.DPAMTRanges })
	tw.Flush()
	t.Logf("1 GiB TD, 1000 random 4K pages converted to shared and back:\n%s", b.String())
}

// TestHugeConvertSeeds runs the same over 200 deterministic-scheduler
// seeds (20 with -short) with four concurrent vCPUs and fewer pages, so
// vCPUs race on conversions, splits and accepts in the same 2 MiB ranges.
func TestHugeConvertSeeds(t *testing.T) {
	seeds := testkit.Seeds(200, 20)
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan uint64)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range work {
				h := &hugeConvert{seed: seed, vcpus: 4, pages: 64, mem: 64 << 20}
				res, err := h.run()
				bad := h.check(res)
				mu.Lock()
				if err != nil {
					t.Errorf("seed %d: %v", seed, err)
				}
				for _, b := range bad {
					t.Errorf("seed %d: %s", seed, b)
				}
				mu.Unlock()
			}
		}()
	}
	for seed := range uint64(seeds) {
		work <- seed
	}
	close(work)
	wg.Wait()
}

// acceptAndTouch accepts [lo, lo+n) like Linux (2 MiB first, or 4 KiB
// only), then reads every page (zero) and writes and reads back its tag.
func acceptAndTouch(t *sched.Thread, g *guest.Guest, v *tdx.VCPU, lo, n uint64) error {
	err := g.AcceptRange(t, v, lo, n)
	for gpa := lo; err == nil && gpa < lo+n; gpa += addr.PageSize {
		err = g.Touch(t, v, gpa, true)
	}
	return err
}
