package vmm

import (
	"errors"
	"fmt"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/guest"
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
	// The deterministic scheduler: the same seed gives the same run.
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
		gcfg := guest.Config{RAM: []guest.Range{{GPA: 0, Size: o.MemBytes}}, MaxAcceptLevel: addr.Level2M}
		if o.Accept4K {
			gcfg.MaxAcceptLevel = addr.Level4K
		}
		g, err := guest.New(m.TD, m.VCPUs, gcfg)
		if err != nil {
			setErr(err)
			return
		}
		defer func() { res.GuestErrors = g.Problems() }()
		// Shares start on 2 MiB boundaries where they can, so that no
		// vCPU's edge cuts a range the guest could accept whole.
		per := (o.AcceptBytes / uint64(o.VCPUs)) &^ (addr.PageSize - 1)
		if per >= addr.Size2M {
			per &^= addr.Size2M - 1
		}
		vcpus := sched.NewGroup(t, "every vCPU accepted its share")
		for i, v := range m.VCPUs {
			lo := uint64(i) * per
			n := per
			if i == o.VCPUs-1 {
				n = o.AcceptBytes - lo
			}
			vcpus.Go(fmt.Sprintf("vcpu%d", i), func(vt *sched.Thread) error {
				defer v.Halt()
				setErr(acceptAndTouch(vt, g, v, lo, n)) // the first error in time, not in vCPU order
				return nil
			})
		}
		_ = vcpus.Wait()
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
			convert := sched.NewGroup(t, "conversion done")
			convert.Go("vcpu0-convert", func(vt *sched.Thread) error {
				defer m.VCPUs[0].Halt()
				setErr(g.RoundTrip(vt, m.VCPUs[0], 0, o.ConvertBytes, true))
				return nil
			})
			_ = convert.Wait()
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

// acceptAndTouch accepts [lo, lo+n) like Linux (2 MiB first, or 4 KiB
// only), then reads every page (zero) and writes and reads back its tag.
func acceptAndTouch(t *sched.Thread, g *guest.Guest, v *tdx.VCPU, lo, n uint64) error {
	if err := g.AcceptRange(t, v, lo, n); err != nil {
		return err
	}
	for gpa := lo; gpa < lo+n; gpa += addr.PageSize {
		if err := g.Touch(t, v, gpa, true); err != nil {
			return err
		}
	}
	return nil
}

func humanSize(b uint64) string {
	if b >= addr.Size1G {
		return fmt.Sprintf("%dG", b>>30)
	}
	return fmt.Sprintf("%dM", b>>20)
}
