package tdx_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxmodule"
	"github.com/tdxsim/tdxsim/vmm"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

// env is one host with one TD built by the VMM, finalized, ready to run.
type env struct {
	t     *testing.T
	mem   *hostmem.Memory
	mod   *tdxmodule.Module
	host  *tdx.Host
	m     *vmm.VMM
	td    *tdx.TD
	c     *event.Counter
	rec   *event.Recorder
	free0 uint64 // free host pages before the TD
}

type opts struct {
	seed     uint64
	memBytes uint64
	vcpus    int
	dynamic  bool
	image    []byte // measured, at the top of memory; nil: none
	noFinal  bool   // stop before KVM_TDX_FINALIZE_VM
	record   bool
	mmu      mmu.Config
	// huge keeps mmu.HugePages (a HugeTLB guest_memfd, pools reserved);
	// without it the TD runs with huge pages off, as mainline does.
	huge    bool
	allow1G bool // the module allows 1G AUG
	kvm     *kvm.Config
	vmm     vmm.Config // InPlace, GmemOffset
	pin     bool       // the pin_private_pages policy
	// terminate is teardown=terminate_vm: the VMM calls
	// KVM_TDX_TERMINATE_VM before closing the guest_memfd.
	terminate bool
}

// runTD builds a TD under the deterministic scheduler and runs body in the
// VMM thread; it returns the scheduler's error (deadlock, panic).
func runTD(t *testing.T, o opts, body func(th *sched.Thread, e *env)) (*env, error) {
	t.Helper()
	if o.memBytes == 0 {
		o.memBytes = 16 * mib
	}
	if o.vcpus == 0 {
		o.vcpus = 2
	}
	e := &env{t: t, c: event.NewCounter(), rec: &event.Recorder{}}
	var sink event.Sink = e.c
	if o.record {
		sink = event.Tee{e.c, e.rec}
	}
	if !o.huge {
		o.mmu.HugePages = mmu.HugePagesOff
	}
	vcfg := o.vmm
	vcfg.MemBytes, vcfg.VCPUs, vcfg.TD = o.memBytes, o.vcpus, tdx.Config{MMU: o.mmu, PinPrivatePages: o.pin, TerminateVM: o.terminate}
	var err error
	if e.host, err = vmm.NewHost(vmm.HostConfig{Bytes: 1<<30 + 2*o.memBytes, DynamicPAMT: o.dynamic, Packages: 2,
		Allow1GAug: o.allow1G, KVM: o.kvm, TDs: []vmm.Config{vcfg}}, sink); err != nil {
		t.Fatal(err)
	}
	e.mem, e.mod = e.host.Mem, e.host.Mod
	e.free0 = e.mem.FreePages()
	s := sched.New(sched.Deterministic, o.seed, sink)
	s.Go("vmm", func(th *sched.Thread) {
		m, err := vmm.Create(th, e.host, vcfg)
		if err != nil {
			t.Errorf("vmm.Create: %v", err)
			return
		}
		e.m, e.td = m, m.TD
		if o.image != nil {
			gpa := o.memBytes - uint64(len(o.image)+addr.PageSize-1)&^(addr.PageSize-1)
			if err := m.LoadImage(th, []vmm.Region{{GPA: gpa, Data: o.image, Measure: true}}); err != nil {
				t.Errorf("LoadImage: %v", err)
				return
			}
		}
		if !o.noFinal {
			if _, err := m.Finalize(th); err != nil {
				t.Errorf("Finalize: %v", err)
				return
			}
		}
		body(th, e)
	})
	return e, s.Run()
}

// runClean is runTD for a run that must end clean: no scheduler error, no
// violation, and nothing left of the TD after teardown.
func runClean(t *testing.T, o opts, body func(th *sched.Thread, e *env)) *env {
	t.Helper()
	e, err := runTD(t, o, body)
	if err != nil {
		t.Fatal(err)
	}
	e.noViolations()
	e.clean()
	return e
}

// vcpus runs fn on each vCPU in its own thread and waits for all.
func (e *env) vcpus(th *sched.Thread, fn func(vt *sched.Thread, i int, v *tdx.VCPU) error) []error {
	errs := make([]error, len(e.m.VCPUs))
	g := sched.NewGroup(th, "vCPUs done")
	for i, v := range e.m.VCPUs {
		g.Go(fmt.Sprintf("vcpu%d", i), func(vt *sched.Thread) error {
			defer v.Halt()
			errs[i] = fn(vt, i, v)
			return nil
		})
	}
	g.Wait()
	return errs
}

// accept accepts [gpa, gpa+size) at 4K on v; an already accepted page is
// fine; BUSY is retried as a guest does.
func accept(th *sched.Thread, v *tdx.VCPU, gpa, size uint64) error {
	for g := gpa; g < gpa+size; g += addr.PageSize {
		for tries := 0; ; tries++ {
			st, err := v.Accept(th, addr.GPA(g), addr.Level4K)
			if err != nil {
				return err
			}
			if st == tdxmodule.Success || st.HasCode(tdxmodule.PageAlreadyAccepted) {
				break
			}
			if !st.HasCode(tdxmodule.OperandBusy) || tries > 1000 {
				return fmt.Errorf("accept %#x: %v", g, st)
			}
			th.Yield()
		}
	}
	return nil
}

// mirrorLeaf reports the mirror root's 4K leaf at gpa.
func (e *env) mirrorLeaf(gpa uint64) (mmu.Leaf, bool) {
	return e.td.MMU().Lookup(mmu.MirrorRoot, addr.GPA(gpa).GFN())
}

// septMapped reports whether the S-EPT maps gpa with a 4K leaf, and where.
func (e *env) septMapped(gpa uint64) (addr.PFN, bool) {
	ent, ok := e.mod.Lookup(e.td.TDR(), addr.GPA(gpa))
	if !ok || ent.Level != addr.Level4K || ent.HPA == 0 && ent.State == 0 {
		return 0, false
	}
	switch tdxmodule.SeptStateName(ent.State) {
	case "MAPPED", "PENDING", "BLOCKED", "PENDING_BLOCKED":
		return ent.HPA.PFN(), true
	}
	return 0, false
}

// agree checks mirror root and S-EPT agree on every 4K GPA in [lo, hi).
func (e *env) agree(lo, hi uint64) {
	e.t.Helper()
	for g := lo; g < hi; g += addr.PageSize {
		l, ok := e.mirrorLeaf(g)
		p, sok := e.septMapped(g)
		if ok != sok || ok && l.PFN != p {
			e.t.Errorf("gpa %#x: mirror %v (%v) vs S-EPT %v (%v)", g, ok, l.PFN, sok, p)
			return
		}
	}
}

// teardown tears the TD down and checks nothing is left.
func (e *env) teardown(th *sched.Thread) {
	e.t.Helper()
	if err := e.m.Teardown(th); err != nil {
		e.t.Errorf("teardown: %v", err)
	}
}

// clean checks, after the run, that the TD left nothing behind.
func (e *env) clean() {
	e.t.Helper()
	if e.m == nil {
		return
	}
	if u := e.mem.Usage(e.m.VM.Account()); u.Charged+u.Uncharged != 0 {
		e.t.Errorf("after teardown %+v still charged to %s", u, e.m.VM.Name())
	}
	if got := e.mem.FreePages(); got != e.free0 {
		e.t.Errorf("after teardown %d host pages free, want %d (%d leaked)", got, e.free0, int64(e.free0)-int64(got))
	}
	if n := e.host.HKIDsInUse(); n != 0 {
		e.t.Errorf("%d HKIDs still in use", n)
	}
	if e.host.DPAMTRanges() != 0 {
		e.t.Errorf("%d Dynamic PAMT ranges still installed", e.host.DPAMTRanges())
	}
}

// noViolations fails on any violation event.
func (e *env) noViolations() {
	e.t.Helper()
	for _, v := range e.c.Violations() {
		e.t.Errorf("violation %s: %s", v.Name, v.Detail)
	}
}

func isErrno(err error, want error) bool { return errors.Is(err, want) }

func attrs(gpa, size uint64, private bool) kvm.MemoryAttributes {
	a := kvm.MemoryAttributes{Address: gpa, Size: size}
	if private {
		a.Attributes = gmem.AttrPrivate
	}
	return a
}
