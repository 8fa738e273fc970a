// Package bench measures the model's speed and memory on its hot paths:
// the private 4K and 2M fault paths (EPT violation, fault, AUG,
// accept), converting a 4K page inside a 2M mapping (split and remove),
// building a TD from a 64 MiB measured image, teardown per GiB, and the
// deterministic scheduler's switch; and, where /dev/kvm allows, the real
// kernel's guest_memfd fault-in rate beside them. `tdxsim bench` and the
// Go benchmarks in this package run the same functions.
//
// Every figure is measured on the parallel scheduler with the checks off,
// one vCPU on one goroutine, unless its name says otherwise. Model state
// per page is the live heap the TD added (after a GC), divided by the
// pages it maps.
package bench

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/guest"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/kvmhost"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/scenario"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/vmm"
)

// Result is one figure.
type Result struct {
	Name         string  `json:"name"`
	OpsPerSec    float64 `json:"ops_per_sec"`
	BytesPerPage float64 `json:"bytes_per_page"`
	// AllocsPerOp is Go heap allocations per operation (fault paths
	// only): what a per-4K-page object on the path would show as >= 1.
	AllocsPerOp float64 `json:"allocs_per_op"`
	Ops         int64   `json:"ops"`
	ElapsedNS   int64   `json:"elapsed_ns"`
	// Unit says what one operation is.
	Unit string `json:"unit"`
	// Note says what else was measured or why a figure is missing.
	Note string `json:"note,omitempty"`

	// Median, Min and Max are the rate (ops per second) over the rounds
	// of a `tdxsim bench` run, OpsPerSec repeats the median; all three
	// are null for a figure that was not measured. PerRound is every
	// round's rate in the order measured.
	Median   *float64  `json:"median"`
	Min      *float64  `json:"min"`
	Max      *float64  `json:"max"`
	Rounds   int       `json:"rounds"`
	PerRound []float64 `json:"per_round,omitempty"`
	// VsRealKVM (fault_4k only) is the median model rate over the median
	// real guest_memfd fault-in rate measured in the same run; absent when
	// the real kernel could not be measured.
	VsRealKVM *float64 `json:"vs_real_kvm,omitempty"`
	// VsOneVCPU (fault_4k_2vcpus only) is its median rate over fault_4k's
	// (one vCPU, the same TD size) in the same run.
	VsOneVCPU *float64 `json:"vs_one_vcpu,omitempty"`
	// Real (fault_4k only) says why there is no vs_real_kvm.
	Real string `json:"real,omitempty"`

	// perPage and perOp say which of BytesPerPage and AllocsPerOp this
	// figure measures, so the text output prints "-" rather than a 0
	// nobody measured.
	perPage, perOp bool
}

// Report is a whole `tdxsim bench` run.
type Report struct {
	Machine Machine `json:"machine"`
	Cores   int     `json:"cores"`
	// Rounds is how many times each figure was measured, interleaved
	// (every figure once per round, the real kernel's next to the model's).
	Rounds int `json:"rounds"`
	// Spread says what min and max are.
	Spread  string   `json:"spread"`
	Results []Result `json:"results"`
}

// Options size a fault measurement.
type Options struct {
	MemBytes uint64 // TD memory; every page of it is faulted and accepted
	Huge     bool   // 2M mappings (a HugeTLB guest_memfd) rather than 4K
	VCPUs    int    // vCPUs accepting in parallel (default 1)
	Parallel bool   // parallel scheduler (default: deterministic)
}

// Faults builds a TD of o.MemBytes and accepts all of it, each vCPU its
// share, at 4K or 2M: every accept is an EPT violation, a fault through
// guest_memfd, a TDH.MEM.PAGE.AUG and the accept. It returns the faults
// per second (4K pages or 2M pages) and the live heap per mapped unit.
func Faults(o Options) (Result, error) {
	name, unit := "fault_4k", addr.PageSize
	level := addr.Level4K
	hp := mmu.HugePagesOff
	if o.Huge {
		name, unit, level, hp = "fault_2m", addr.Size2M, addr.Level2M, mmu.HugePages2M
	}
	r := Result{Name: name, Unit: "private fault + AUG + accept of a " + addr.Level(level).String() + " page", perPage: true, perOp: true}
	vcpus := max(o.VCPUs, 1)
	cfg := vmm.Config{MemBytes: o.MemBytes, VCPUs: vcpus, TD: tdx.Config{MMU: mmu.Config{HugePages: hp}}}
	heap0 := liveHeap()
	var elapsed time.Duration
	var after, mallocs0, mallocs1 uint64
	err := withTD(cfg, o.Parallel, level, func(t *sched.Thread, m *vmm.VMM, g *guest.Guest) error {
		per := o.MemBytes / uint64(vcpus) &^ (uint64(unit) - 1)
		errs := make([]error, vcpus)
		done := make(chan struct{}, vcpus)
		var left atomic.Int32
		left.Store(int32(vcpus))
		mallocs0 = mallocs()
		start := time.Now()
		for i, v := range m.VCPUs {
			lo, n := uint64(i)*per, per
			if i == vcpus-1 {
				n = o.MemBytes - lo
			}
			t.Go(fmt.Sprintf("vcpu%d", i), func(vt *sched.Thread) {
				defer func() { v.Halt(); left.Add(-1); done <- struct{}{} }()
				errs[i] = g.AcceptRange(vt, v, lo, n)
			})
		}
		if o.Parallel {
			for range vcpus {
				<-done
			}
		} else {
			t.WaitUntil("every vCPU accepted", func() bool { return left.Load() == 0 })
		}
		elapsed = time.Since(start)
		mallocs1 = mallocs()
		after = liveHeap()
		return errors.Join(errs...)
	})
	if err != nil {
		return r, err
	}
	r.Ops = int64(o.MemBytes / uint64(unit))
	r.ElapsedNS = elapsed.Nanoseconds()
	r.OpsPerSec = float64(r.Ops) / elapsed.Seconds()
	r.BytesPerPage = float64(int64(after)-int64(heap0)) / float64(r.Ops)
	r.AllocsPerOp = float64(mallocs1-mallocs0) / float64(r.Ops)
	return r, nil
}

// mallocs is the count of heap objects allocated so far.
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// withTD builds a host and one TD of cfg (no image), finalizes it, makes
// its guest accept at up to level, runs body in the VMM thread, and tears
// the TD down.
func withTD(cfg vmm.Config, parallel bool, level addr.Level, body func(t *sched.Thread, m *vmm.VMM, g *guest.Guest) error) error {
	host, err := vmm.NewHost(vmm.HostConfig{Bytes: cfg.MemBytes + cfg.MemBytes/8 + 256<<20, DynamicPAMT: true, Packages: 1,
		TDs: []vmm.Config{cfg}}, event.Discard)
	if err != nil {
		return err
	}
	mode := sched.Deterministic
	if parallel {
		mode = sched.Parallel
	}
	s := sched.New(mode, 1, event.Discard)
	var runErr error
	s.Go("vmm", func(t *sched.Thread) {
		m, err := vmm.Create(t, host, cfg)
		if err != nil {
			runErr = err
			return
		}
		defer func() { runErr = errors.Join(runErr, m.Teardown(t)) }()
		if _, err := m.Finalize(t); err != nil {
			runErr = err
			return
		}
		g, err := guest.New(m.TD, m.VCPUs, guest.Config{RAM: []guest.Range{{GPA: 0, Size: cfg.MemBytes}}, MaxAcceptLevel: level})
		if err != nil {
			runErr = err
			return
		}
		runErr = body(t, m, g)
	})
	return errors.Join(s.Run(), runErr)
}

// liveHeap is the heap in use after a full GC. Two: a sync.Pool's
// objects survive the first in its victim cache, so after one GC the
// previous figure's pools still count here and would be freed during the
// next measurement (a negative bytes per page in a later round).
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// Convert4KIn2M accepts n 2 MiB pages at 2M, then converts one 4K page
// inside each to shared through KVM (KVM_SET_MEMORY_ATTRIBUTES): each is a
// split of the 2M mapping (BLOCK, TRACK, DEMOTE, a split of the mirror
// leaf) and the removal of the 4K page (BLOCK, TRACK, REMOVE). Deterministic
// scheduler (one thread does all of it).
func Convert4KIn2M(n int) (Result, error) {
	r := Result{Name: "convert_4k_in_2m", Unit: "4K page converted to shared inside a 2M mapping (split + remove)"}
	mem := uint64(n) * addr.Size2M
	cfg := vmm.Config{MemBytes: mem, VCPUs: 1, TD: tdx.Config{MMU: mmu.Config{HugePages: mmu.HugePages2M}}}
	var elapsed time.Duration
	var splits int64
	err := withTD(cfg, false, addr.Level2M, func(t *sched.Thread, m *vmm.VMM, g *guest.Guest) error {
		done := false
		var err error
		t.Go("vcpu0", func(vt *sched.Thread) {
			defer func() { m.VCPUs[0].Halt(); done = true }()
			err = g.AcceptRange(vt, m.VCPUs[0], 0, mem)
		})
		t.WaitUntil("vCPU accepted", func() bool { return done })
		if err != nil {
			return err
		}
		start := time.Now()
		for i := range uint64(n) {
			a := kvm.MemoryAttributes{Address: i*addr.Size2M + 0x5000, Size: addr.PageSize, Attributes: 0}
			if err := m.VM.SetMemoryAttributes(t, a); err != nil {
				return err
			}
		}
		elapsed = time.Since(start)
		splits = m.TD.Stats().Splits
		return nil
	})
	if err != nil {
		return r, err
	}
	if splits != int64(n) {
		return r, fmt.Errorf("bench: %d splits for %d conversions", splits, n)
	}
	r.Ops, r.ElapsedNS = int64(n), elapsed.Nanoseconds()
	r.OpsPerSec = float64(n) / elapsed.Seconds()
	return r, nil
}

// Build builds a TD whose image of imageBytes is added with
// TDH.MEM.PAGE.ADD and measured with TDH.MR.EXTEND, and finalizes it. One
// operation is one whole build; bytes per page is the heap per image page.
func Build(imageBytes uint64) (Result, error) {
	r := Result{Name: fmt.Sprintf("build_%dm", imageBytes>>20), Unit: fmt.Sprintf("TD build with a %d MiB measured image (PAGE.ADD + MR.EXTEND + FINALIZE)", imageBytes>>20), perPage: true}
	mem := max(imageBytes*2, 64<<20)
	cfg := vmm.Config{MemBytes: mem, VCPUs: 1, TD: tdx.Config{MMU: mmu.Config{HugePages: mmu.HugePages2M}}}
	img := make([]byte, imageBytes)
	for i := range img {
		img[i] = byte(i*7 + i>>12)
	}
	host, err := vmm.NewHost(vmm.HostConfig{Bytes: mem + 512<<20, DynamicPAMT: true, Packages: 1, TDs: []vmm.Config{cfg}}, event.Discard)
	if err != nil {
		return r, err
	}
	heap0 := liveHeap()
	var elapsed time.Duration
	var after uint64
	var runErr error
	s := sched.New(sched.Parallel, 1, event.Discard)
	s.Go("vmm", func(t *sched.Thread) {
		start := time.Now()
		m, err := vmm.Create(t, host, cfg)
		if err != nil {
			runErr = err
			return
		}
		defer func() { runErr = errors.Join(runErr, m.Teardown(t)) }()
		if err := m.LoadImage(t, []vmm.Region{{GPA: mem - imageBytes, Data: img, Measure: true}}); err != nil {
			runErr = err
			return
		}
		if _, err := m.Finalize(t); err != nil {
			runErr = err
			return
		}
		elapsed = time.Since(start)
		after = liveHeap()
	})
	if err := errors.Join(s.Run(), runErr); err != nil {
		return r, err
	}
	r.Ops, r.ElapsedNS = 1, elapsed.Nanoseconds()
	r.OpsPerSec = 1 / elapsed.Seconds()
	r.BytesPerPage = float64(int64(after)-int64(heap0)-int64(imageBytes)) / float64(imageBytes/addr.PageSize)
	return r, nil
}

// Teardown accepts a TD of gib GiB (at 2M with huge, else 4K) and times
// its teardown: zapping both roots (BLOCK/TRACK-free removal under a
// released HKID: TDH.PHYMEM.PAGE.RECLAIM of every S-EPT page), the
// control pages, guest_memfd's truncation. One operation is one GiB.
func Teardown(gib int, huge bool) (Result, error) {
	r := Result{Name: "teardown_per_gib", Unit: "GiB of accepted TD memory torn down"}
	mem := uint64(gib) << 30
	hp, level := mmu.HugePagesOff, addr.Level4K
	if huge {
		hp, level = mmu.HugePages2M, addr.Level2M
		r.Note = "accepted at 2M"
	} else {
		r.Note = "accepted at 4K"
	}
	cfg := vmm.Config{MemBytes: mem, VCPUs: 1, TD: tdx.Config{MMU: mmu.Config{HugePages: hp}}}
	host, err := vmm.NewHost(vmm.HostConfig{Bytes: mem + mem/8 + 256<<20, DynamicPAMT: true, Packages: 1, TDs: []vmm.Config{cfg}}, event.Discard)
	if err != nil {
		return r, err
	}
	var elapsed time.Duration
	var runErr error
	free0 := host.Mem.FreePages()
	s := sched.New(sched.Parallel, 1, event.Discard)
	s.Go("vmm", func(t *sched.Thread) {
		m, err := vmm.Create(t, host, cfg)
		if err != nil {
			runErr = err
			return
		}
		if _, err = m.Finalize(t); err == nil {
			var g *guest.Guest
			if g, err = guest.New(m.TD, m.VCPUs, guest.Config{RAM: []guest.Range{{GPA: 0, Size: mem}}, MaxAcceptLevel: level}); err == nil {
				err = g.AcceptRange(t, m.VCPUs[0], 0, mem)
				m.VCPUs[0].Halt()
			}
		}
		start := time.Now()
		runErr = errors.Join(err, m.Teardown(t))
		elapsed = time.Since(start)
	})
	if err := errors.Join(s.Run(), runErr); err != nil {
		return r, err
	}
	if left := int64(free0) - int64(host.Mem.FreePages()); left != 0 {
		return r, fmt.Errorf("bench: %d host pages not back after teardown", left)
	}
	r.Ops, r.ElapsedNS = int64(gib), elapsed.Nanoseconds()
	r.OpsPerSec = float64(gib) / elapsed.Seconds()
	return r, nil
}

// SchedSwitch is the deterministic scheduler's cost of handing the CPU
// from one simulated thread to another: two threads yield n times each.
func SchedSwitch(n int) (Result, error) {
	r := Result{Name: "sched_switch", Unit: "deterministic scheduler thread switch"}
	s := sched.New(sched.Deterministic, 1, event.Discard)
	for i := range 2 {
		s.Go(fmt.Sprintf("t%d", i), func(t *sched.Thread) {
			for range n {
				t.Yield()
			}
		})
	}
	start := time.Now()
	if err := s.Run(); err != nil {
		return r, err
	}
	elapsed := time.Since(start)
	r.Ops, r.ElapsedNS = int64(s.Switches()), elapsed.Nanoseconds()
	r.OpsPerSec = float64(r.Ops) / elapsed.Seconds()
	r.Note = fmt.Sprintf("%d yields, %d switches", 2*n, r.Ops)
	return r, nil
}

// ErrNoKVM is why the real kernel's figure is missing where /dev/kvm
// cannot be opened.
var ErrNoKVM = errors.New("no /dev/kvm")

// RealKVMFault4K faults in a real guest_memfd of size bytes on this
// machine's kernel (kvmhost.FaultRate). It fails with ErrNoKVM where
// /dev/kvm cannot be opened.
func RealKVMFault4K(size uint64) (Result, error) {
	r := Result{Name: "real_kvm_fault_4k"}
	if err := kvmhost.Available(); err != nil {
		return r, fmt.Errorf("%w (%w)", ErrNoKVM, err)
	}
	n, elapsed, how, err := kvmhost.FaultRate(size)
	if err != nil {
		return r, err
	}
	r.Unit, r.Ops, r.ElapsedNS = "4K page of a real guest_memfd faulted in", int64(n), elapsed.Nanoseconds()
	r.OpsPerSec = float64(n) / elapsed.Seconds()
	r.Note = how
	return r, nil
}

// ChecksOverhead runs the embedded default scenario (a 4 GiB TD: build,
// lazy accept, conversions, teardown) on the deterministic scheduler with
// the cross-layer checks after every step and without them, and returns
// the runs per second with checks on; the note gives the ratio.
func ChecksOverhead() (Result, error) {
	r := Result{Name: "checks_overhead", Unit: "default scenario run with every per-step check"}
	f, err := scenario.Default()
	if err != nil {
		return r, err
	}
	timed := func(o scenario.Options) (time.Duration, error) {
		start := time.Now()
		_, err := scenario.Run(f, o)
		return time.Since(start), err
	}
	off, err := timed(scenario.Options{NoStepChecks: true})
	if err != nil {
		return r, err
	}
	on, err := timed(scenario.Options{})
	if err != nil {
		return r, err
	}
	r.Ops, r.ElapsedNS = 1, on.Nanoseconds()
	r.OpsPerSec = 1 / on.Seconds()
	r.Note = fmt.Sprintf("%.2fx the run without checks (%.2f s vs %.2f s)", on.Seconds()/off.Seconds(), on.Seconds(), off.Seconds())
	return r, nil
}

// TwoVCPUs accepts memBytes at 4K with two vCPUs, each on its own
// goroutine (parallel scheduler), faulting under mmu_lock for read. Run
// compares it with fault_4k's rounds (one vCPU, the same size) of the same
// run for vs_one_vcpu.
func TwoVCPUs(memBytes uint64) (Result, error) {
	r, err := Faults(Options{MemBytes: memBytes, Parallel: true, VCPUs: 2})
	r.Name = "fault_4k_2vcpus"
	r.Unit = "private 4K fault + AUG + accept, two vCPUs in parallel"
	r.Note = fmt.Sprintf("%d cores", runtime.NumCPU())
	return r, err
}

// Scale boots a TD of memBytes and has one vCPU accept all of it (at 2M
// with huge, else 4K), on the parallel scheduler, and reports the whole
// run's wall time (host, build, accept, teardown) and the process's peak
// resident memory during it, in the note. The ops are the pages mapped.
func Scale(memBytes uint64, huge bool) (Result, error) {
	debug.FreeOSMemory() // give back what earlier figures left, so the peak is this run's
	resetPeakRSS()
	start := time.Now()
	r, err := Faults(Options{MemBytes: memBytes, Huge: huge, Parallel: true})
	if err != nil {
		return r, err
	}
	wall := time.Since(start)
	lvl := "4K"
	if huge {
		lvl = "2M"
	}
	r.Name = "" // the caller names it (Run: scale_64GiB_at_4K, scale_4TiB_at_2M, ...)
	r.Unit = fmt.Sprintf("%s TD booted and fully accepted at %s", report.HumanBytes(memBytes), lvl)
	r.Note = fmt.Sprintf("%.1f s wall for the whole run, peak RSS %s", wall.Seconds(), report.HumanBytes(peakRSS()))
	return r, nil
}
