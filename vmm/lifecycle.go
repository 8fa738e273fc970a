package vmm

import (
	"errors"
	"fmt"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// LifecycleOptions describes a whole-TD run through the full stack (VMM,
// KVM, TDP MMU, KVM's TDX code, guest_memfd, the TDX module): build with a
// measured image, vCPUs accepting memory concurrently, a conversion to
// shared and back, a punch hole, teardown.
type LifecycleOptions struct {
	HostBytes   uint64
	DynamicPAMT bool
	Packages    int
	MemBytes    uint64 // TD memory (one memslot at GPA 0)
	VCPUs       int
	ImageBytes  uint64 // measured image at the top of TD memory
	AcceptBytes uint64 // accepted from GPA 0, split across the vCPUs
	// Accept4K makes the guest accept every page at 4 KiB; by default it
	// accepts like Linux (tdx_accept_memory): 2 MiB where a whole aligned
	// 2 MiB is asked for, falling back to 4 KiB on PAGE_SIZE_MISMATCH.
	Accept4K bool
	// ConvertBytes, from GPA 0, go shared with MapGPA (the guest writes
	// and reads them through the shared alias), then private again and
	// are re-accepted, reading zero.
	ConvertBytes uint64
	// PunchBytes, right after the converted range, are punched out of
	// guest_memfd by the VMM while the TD runs.
	PunchBytes uint64
	Seed       uint64
	// Inject is fault injection on SEAMCALLs (nil: none).
	Inject tdxmodule.Injector
	// MMU holds policy knobs.
	MMU mmu.Config
	// SplitFolioFirst is guest_memfd's split_order=folio_first policy.
	SplitFolioFirst bool
	// Allow1GAug lets the TDX module AUG 1G pages (hugepages=1G).
	Allow1GAug bool
}

// Image returns the image bytes a run with these options loads.
func (o LifecycleOptions) Image() []byte {
	img := make([]byte, o.ImageBytes)
	for i := range img {
		img[i] = byte(i*7 + i>>12)
	}
	return img
}

// ImageGPA returns where the image goes: the top of TD memory.
func (o LifecycleOptions) ImageGPA() uint64 {
	return o.MemBytes - (o.ImageBytes+addr.PageSize-1)&^(addr.PageSize-1)
}

// LifecycleResult is what a lifecycle run measured.
type LifecycleResult struct {
	MRTD          []byte
	PAMTPeak      tdxmodule.PAMTBytes
	SEPTPagesPeak int
	DPAMTRanges   int // 2 MiB ranges with a Dynamic PAMT pair, at peak
	// PageTablesPeak is KVM's page-table pages (both roots) at peak.
	PageTablesPeak int64
	MMU            mmu.Stats
	TD             tdx.Stats
	VMM            Stats
	LeakedPages    int64         // host pages not back in the allocator after teardown
	ChargedAfter   hostmem.Usage // still charged to the VM's account
	HKIDsInUse     int
	Bugged         string // why KVM_BUG_ON fired, if it did
	Steps          uint64
	LockDep        []sched.Report
	GuestErrors    []string // what the guest read that it should not have
}

// ErrBadOptions wraps every rule a LifecycleOptions breaks (bad input,
// not a failed run).
var ErrBadOptions = errors.New("bad lifecycle options")

// Lifecycle runs one TD through its life under the deterministic scheduler: the
// VMM thread builds and finalizes, one thread per vCPU accepts its share,
// vCPU 0 converts ConvertBytes to shared and back, the VMM punches
// PunchBytes, and then tears the TD down.
func Lifecycle(o LifecycleOptions, sink event.Sink) (LifecycleResult, error) {
	var res LifecycleResult
	switch {
	case o.VCPUs < 1:
		return res, fmt.Errorf("%w: vcpus %d: need at least one", ErrBadOptions, o.VCPUs)
	case o.MemBytes == 0 || o.MemBytes%addr.Size2M != 0:
		return res, fmt.Errorf("%w: memory %#x: want a non-zero multiple of 2 MiB", ErrBadOptions, o.MemBytes)
	case o.AcceptBytes%addr.PageSize != 0 || o.ConvertBytes%addr.PageSize != 0 || o.PunchBytes%addr.PageSize != 0:
		return res, fmt.Errorf("%w: accept, convert and punch sizes must be 4 KiB multiples", ErrBadOptions)
	case o.ConvertBytes+o.PunchBytes > o.AcceptBytes:
		return res, fmt.Errorf("%w: convert %#x + punch %#x exceed the accepted %#x", ErrBadOptions, o.ConvertBytes, o.PunchBytes, o.AcceptBytes)
	case o.AcceptBytes+(o.ImageBytes+addr.PageSize-1)&^(addr.PageSize-1) > o.MemBytes:
		return res, fmt.Errorf("%w: accepted memory %#x and image %#x do not fit in %#x", ErrBadOptions, o.AcceptBytes, o.ImageBytes, o.MemBytes)
	}
	vcfg := Config{MemBytes: o.MemBytes, VCPUs: o.VCPUs, TD: tdx.Config{MMU: o.MMU}}
	if unit := uint64(addr.PageSize) << gmemArgs(vcfg).PageOrder; (o.ConvertBytes|o.PunchBytes)%unit != 0 && o.PunchBytes != 0 {
		return res, fmt.Errorf("%w: punch [%#x, %#x): a HugeTLB guest_memfd (hugepages=%s) punches whole %s pages only",
			ErrBadOptions, o.ConvertBytes, o.ConvertBytes+o.PunchBytes, o.MMU.HugePages, humanSize(unit))
	}
	kcfg := kvm.DefaultConfig()
	kcfg.SplitFolioFirst = o.SplitFolioFirst
	host, err := NewHost(HostConfig{Bytes: o.HostBytes, DynamicPAMT: o.DynamicPAMT, Packages: o.Packages,
		Allow1GAug: o.Allow1GAug, KVM: &kcfg, TDs: []Config{vcfg}}, sink)
	if err != nil {
		return res, err
	}
	mem, mod := host.Mem, host.Mod
	freeBefore := int64(mem.FreePages())
	// The deterministic scheduler only: the model's gmem page cache and
	// KVM-side counters are not yet safe under the parallel one.
	s := sched.New(sched.Deterministic, o.Seed, sink)
	var first firstError
	setErr := first.set
	s.Go("vmm", func(t *sched.Thread) {
		m, err := Create(t, host, vcfg)
		if err != nil {
			setErr(err)
			return
		}
		defer func() {
			if b, why := m.VM.Bugged(); b {
				res.Bugged = why
			}
			setErr(m.Teardown(t))
			res.MMU = m.TD.MMU().Stats()
			res.TD = m.TD.Stats()
			res.VMM = m.Stats()
			res.ChargedAfter = mem.Usage(m.VM.Account())
			res.HKIDsInUse = host.HKIDsInUse()
		}()
		if o.ImageBytes > 0 {
			if err := m.LoadImage(t, []Region{{GPA: o.ImageGPA(), Data: o.Image(), Measure: true}}); err != nil {
				setErr(err)
				return
			}
		}
		if res.MRTD, err = m.Finalize(t); err != nil {
			setErr(err)
			return
		}
		mod.SetInjector(o.Inject)
		defer mod.SetInjector(nil)
		g := &guest{m: m, errs: &res.GuestErrors, accept4K: o.Accept4K}
		// Shares start on 2 MiB boundaries where they can, so that no
		// vCPU's edge cuts a range the guest could accept whole.
		per := (o.AcceptBytes / uint64(o.VCPUs)) &^ (addr.PageSize - 1)
		if per >= addr.Size2M {
			per &^= addr.Size2M - 1
		}
		done := 0
		for i, v := range m.VCPUs {
			lo := uint64(i) * per
			n := per
			if i == o.VCPUs-1 {
				n = o.AcceptBytes - lo
			}
			t.Go(fmt.Sprintf("vcpu%d", i), func(vt *sched.Thread) {
				defer func() { v.Halt(); done++ }()
				setErr(g.acceptRange(vt, v, lo, n, 1))
			})
		}
		t.WaitUntil("every vCPU accepted its share", func() bool { return done == o.VCPUs })
		if first.err != nil {
			return
		}
		res.PAMTPeak = mod.PAMT()
		if info, ok := mod.TD(m.TD.TDR()); ok {
			res.SEPTPagesPeak = info.SEPTPages
		}
		res.DPAMTRanges = host.DPAMTRanges()
		pt := m.TD.MMU().Stats().PageTables
		res.PageTablesPeak = pt[0] + pt[1]
		if o.ConvertBytes > 0 {
			converted := false
			t.Go("vcpu0-convert", func(vt *sched.Thread) {
				defer func() { m.VCPUs[0].Halt(); converted = true }()
				setErr(g.convertRoundTrip(vt, m.VCPUs[0], 0, o.ConvertBytes))
			})
			t.WaitUntil("conversion done", func() bool { return converted })
		}
		if o.PunchBytes > 0 {
			setErr(m.PunchHole(t, o.ConvertBytes, o.PunchBytes))
		}
	})
	if err := s.Run(); err != nil {
		return res, err
	}
	res.Steps = s.Steps()
	res.LockDep = s.LockDep().Reports()
	res.LeakedPages = freeBefore - int64(mem.FreePages())
	return res, first.err
}

// guest is the TD's side of the lifecycle: what the vCPUs do, with the
// checks a guest can make on what it reads.
type guest struct {
	m        *VMM
	errs     *[]string
	accept4K bool
}

func (g *guest) fail(format string, args ...any) {
	*g.errs = append(*g.errs, fmt.Sprintf(format, args...))
}

func (g *guest) tag(v *tdx.VCPU, gpa uint64, round uint64) hostmem.Tag {
	return hostmem.MakeTag(uint16(g.m.TD.HKID()), gpa>>addr.PageShift<<8|round<<4|uint64(v.ID()))
}

// acceptRange accepts [lo, lo+n) (2 MiB at a time where it can, unless
// the guest accepts at 4K only), checks each page reads zero, then writes
// a tag and reads it back.
func (g *guest) acceptRange(t *sched.Thread, v *tdx.VCPU, lo, n, round uint64) error {
	for gpa := lo; gpa < lo+n; {
		if !g.accept4K && gpa%addr.Size2M == 0 && gpa+addr.Size2M <= lo+n {
			st, err := g.accept(t, v, gpa, addr.Level2M)
			if err != nil {
				return err
			}
			if st == tdxmodule.Success {
				for p := gpa; p < gpa+addr.Size2M; p += addr.PageSize {
					if err := g.checkFresh(t, v, p, round); err != nil {
						return err
					}
				}
				gpa += addr.Size2M
				continue
			}
			if !st.HasCode(tdxmodule.PageSizeMismatch) {
				return fmt.Errorf("vCPU %d accept %#x at 2M: %v", v.ID(), gpa, st)
			}
			// Mapped at 4K already: fall back to 4K accepts.
			for end := gpa + addr.Size2M; gpa < end; gpa += addr.PageSize {
				if err := g.acceptOne(t, v, gpa, round); err != nil {
					return err
				}
			}
			continue
		}
		if err := g.acceptOne(t, v, gpa, round); err != nil {
			return err
		}
		gpa += addr.PageSize
	}
	return nil
}

// accept runs TDG.MEM.PAGE.ACCEPT until it is not BUSY.
func (g *guest) accept(t *sched.Thread, v *tdx.VCPU, gpa uint64, level addr.Level) (tdxmodule.Status, error) {
	for tries := 0; ; tries++ {
		st, err := v.Accept(t, addr.GPA(gpa), level)
		if err != nil {
			return 0, fmt.Errorf("vCPU %d accept %#x at %s: %w", v.ID(), gpa, level, err)
		}
		if st.HasCode(tdxmodule.OperandBusy) && tries < busyRetries {
			t.Yield()
			continue
		}
		return st, nil
	}
}

func (g *guest) acceptOne(t *sched.Thread, v *tdx.VCPU, gpa, round uint64) error {
	st, err := g.accept(t, v, gpa, addr.Level4K)
	if err != nil {
		return err
	}
	if st != tdxmodule.Success {
		return fmt.Errorf("vCPU %d accept %#x: %v", v.ID(), gpa, st)
	}
	return g.checkFresh(t, v, gpa, round)
}

// checkFresh checks that a just-accepted page reads zero, then writes a
// tag and reads it back.
func (g *guest) checkFresh(t *sched.Thread, v *tdx.VCPU, gpa, round uint64) error {
	if got, err := v.Read(t, addr.GPA(gpa)); err != nil {
		return err
	} else if got != 0 {
		g.fail("gpa %#x reads tag %#x right after accept, want zero", gpa, uint64(got))
	}
	want := g.tag(v, gpa, round)
	if err := v.Write(t, addr.GPA(gpa), want); err != nil {
		return err
	}
	if got, err := v.Read(t, addr.GPA(gpa)); err != nil {
		return err
	} else if got != want {
		g.fail("gpa %#x reads tag %#x, wrote %#x", gpa, uint64(got), uint64(want))
	}
	return nil
}

const busyRetries = 1000

// convertRoundTrip converts [lo, lo+n) to shared with MapGPA, uses it
// through the shared alias, converts it back to private and re-accepts it:
// private content must not survive the round trip.
func (g *guest) convertRoundTrip(t *sched.Thread, v *tdx.VCPU, lo, n uint64) error {
	sharedBit := uint64(g.m.VM.SharedBit().GPA())
	if err := g.mapGPA(t, v, lo|sharedBit, n); err != nil {
		return err
	}
	for gpa := lo; gpa < lo+n; gpa += addr.PageSize {
		alias := addr.GPA(gpa | sharedBit)
		if got, err := v.Read(t, alias); err != nil {
			return err
		} else if got != 0 {
			g.fail("shared gpa %#x reads tag %#x before any write, want zero (private data leaked?)", gpa, uint64(got))
		}
		want := g.tag(v, gpa, 2)
		if err := v.Write(t, alias, want); err != nil {
			return err
		}
		if got, err := v.Read(t, alias); err != nil {
			return err
		} else if got != want {
			g.fail("shared gpa %#x reads %#x, wrote %#x", gpa, uint64(got), uint64(want))
		}
	}
	if err := g.mapGPA(t, v, lo, n); err != nil {
		return err
	}
	return g.acceptRange(t, v, lo, n, 3)
}

func (g *guest) mapGPA(t *sched.Thread, v *tdx.VCPU, gpa, size uint64) error {
	for tries := 0; ; tries++ {
		st, r11, err := v.MapGPA(t, gpa, size)
		if err != nil {
			return err
		}
		switch st {
		case tdx.TDVMCallSuccess:
			return nil
		case tdx.TDVMCallRetry:
			if tries < busyRetries {
				size -= r11 - gpa
				gpa = r11
				continue
			}
		}
		return fmt.Errorf("MapGPA(%#x, %#x): status %#x at %#x", gpa, size, st, r11)
	}
}

func humanSize(b uint64) string {
	if b >= addr.Size1G {
		return fmt.Sprintf("%dG", b>>30)
	}
	return fmt.Sprintf("%dM", b>>20)
}
