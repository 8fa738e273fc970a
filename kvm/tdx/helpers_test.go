package tdx_test

import (
	"fmt"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/internal/testkit"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxmodule"
	"github.com/tdxsim/tdxsim/vmm"
)

// env is one host with one TD built by the VMM, finalized, ready to run.
type env struct {
	t     *testing.T
	host  *tdx.Host // its Mem is the host's memory, its Mod the TDX module
	mod   *tdxmodule.Module
	m     *vmm.VMM
	td    *tdx.TD
	c     *event.Counter
	rec   *event.Recorder // every event, with opts.record
	free0 uint64          // free host pages before the TD
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
	// splitFolioFirst is KVM's split_order=folio_first (on top of kvm).
	splitFolioFirst bool
	// terminate is teardown=terminate_vm: the VMM calls
	// KVM_TDX_TERMINATE_VM before closing the guest_memfd.
	terminate bool
}

// runTD builds a TD under the deterministic scheduler and runs body in the
// VMM thread; a run that ends in error (a deadlock, a panic) fails t.
func runTD(t *testing.T, o opts, body func(th *sched.Thread, e *env)) *env {
	t.Helper()
	if o.memBytes == 0 {
		o.memBytes = 16 * addr.MiB
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
	if o.splitFolioFirst {
		k := kvm.DefaultConfig()
		if o.kvm != nil {
			k = *o.kvm
		}
		k.SplitFolioFirst = true
		o.kvm = &k
	}
	var err error
	if e.host, err = vmm.NewHost(vmm.HostConfig{Bytes: 1<<30 + 2*o.memBytes, DynamicPAMT: o.dynamic, Packages: 2,
		Allow1GAug: o.allow1G, KVM: o.kvm, TDs: []vmm.Config{vcfg}}, sink); err != nil {
		t.Fatal(err)
	}
	e.mod = e.host.Mod
	e.free0 = e.host.Mem.FreePages()
	testkit.Run(t, o.seed, sink, func(th *sched.Thread) {
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
	return e
}

// runClean is runTD for a run that must end clean: no scheduler error, no
// violation, and nothing left of the TD after teardown.
func runClean(t *testing.T, o opts, body func(th *sched.Thread, e *env)) *env {
	t.Helper()
	e := runTD(t, o, body)
	e.noViolations()
	e.clean()
	return e
}

// tdxHost is a test host with a Dynamic PAMT TDX module of two private
// HKIDs and KVM's TDX code on it, configured by cfg.
func tdxHost(t *testing.T, cfg tdx.HostConfig) (*testkit.Host, *tdx.Host) {
	t.Helper()
	k := testkit.NewHost(t, testkit.Config{})
	mod, err := tdxmodule.New(k.Mem, tdxmodule.Config{DynamicPAMT: true, HKIDs: 2}, k.Events)
	if err != nil {
		t.Fatal(err)
	}
	k.Mem.SetGuard(mod)
	h, err := tdx.NewHost(k.KVM, mod, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k, h
}

// bare runs body with a host and a fresh TDX VM (no INIT_VM yet).
func bare(t *testing.T, body func(th *sched.Thread, h *tdx.Host, td *tdx.TD)) {
	t.Helper()
	k, h := tdxHost(t, tdx.HostConfig{})
	k.Run(t, 1, func(th *sched.Thread) {
		td, err := newTD(th, h)
		if err != nil {
			t.Fatal(err)
		}
		body(th, h, td)
	})
}

// newTD is KVM_CREATE_VM of a KVM_X86_TDX_VM on h and its TD, before
// KVM_TDX_INIT_VM.
func newTD(th *sched.Thread, h *tdx.Host) (*tdx.TD, error) {
	vm, err := h.Sys.CreateVM(th, kvm.TDXVM)
	if err != nil {
		return nil, err
	}
	return h.NewTD(vm, tdx.Config{})
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
	if u := e.host.Mem.Usage(e.m.VM.Account()); u.Charged+u.Uncharged != 0 {
		e.t.Errorf("after teardown %+v still charged to %s", u, e.m.VM.Name())
	}
	if got := e.host.Mem.FreePages(); got != e.free0 {
		e.t.Errorf("after teardown %d host pages free, want %d (%d leaked)", got, e.free0, int64(e.free0)-int64(got))
	}
	if n := e.host.HKIDsInUse(); n != 0 {
		e.t.Errorf("%d HKIDs still in use", n)
	}
	if e.host.DPAMTRanges() != 0 {
		e.t.Errorf("%d Dynamic PAMT ranges still installed", e.host.DPAMTRanges())
	}
}

// wantErrno fails t unless err carries want (0: success).
var wantErrno = testkit.WantErrno

// noViolations fails on any violation event.
func (e *env) noViolations() {
	e.t.Helper()
	testkit.NoViolations(e.t, e.c)
}

// violations fails on every violation whose rule is not one of expected,
// and counts those of each expected rule.
func (e *env) violations(expected ...string) map[string]int {
	e.t.Helper()
	return testkit.ExpectViolations(e.t, e.c, expected...)
}

// privateRange is the private zap range of GFNs [start, end) in the slot
// that holds start, as guest_memfd hands it to the MMU.
func (e *env) privateRange(start, end addr.GFN) gmem.Range {
	return gmem.Range{Slot: e.m.VM.SlotAt(start), Start: start, End: end, Filter: gmem.FilterPrivate}
}

// setAttrs is KVM_SET_MEMORY_ATTRIBUTES of [gpa, gpa+size): private, or
// shared.
func (e *env) setAttrs(th *sched.Thread, gpa, size uint64, private bool) error {
	a := kvm.MemoryAttributes{Address: gpa, Size: size}
	if private {
		a.Attributes = gmem.AttrPrivate
	}
	return e.m.VM.SetMemoryAttributes(th, a)
}

// mustSetAttrs is setAttrs that fails the test on error.
func (e *env) mustSetAttrs(th *sched.Thread, gpa, size uint64, private bool) {
	e.t.Helper()
	if err := e.setAttrs(th, gpa, size, private); err != nil {
		e.t.Fatal(err)
	}
}
