package tdx_test

import (
	"errors"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/internal/mrtdvec"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
)

func TestInitVMErrnos(t *testing.T) {
	bare(t, func(th *sched.Thread, h *tdx.Host, td *tdx.TD) {
		if _, err := td.CreateVCPU(th, 0); !errors.Is(err, errno.EIO) {
			t.Errorf("KVM_CREATE_VCPU before INIT_VM: %v, want EIO", err)
		}
		wantErrno(t, "GPAW 40", td.InitVM(th, tdx.InitVM{GPAW: 40}), errno.EINVAL)
		wantErrno(t, "GPAW 52 on 4-level EPT", td.InitVM(th, tdx.InitVM{GPAW: 52}), errno.EINVAL)
		wantErrno(t, "hw_error set", td.InitVM(th, tdx.InitVM{GPAW: 48, HWError: 1}), errno.EINVAL)
		if err := td.InitVM(th, tdx.InitVM{GPAW: 48, MaxVCPUs: 1}); err != nil {
			t.Fatal(err)
		}
		if td.State() != tdx.StateInitialized || td.HKID() == 0 {
			t.Errorf("after INIT_VM: %v, HKID %d", td.State(), td.HKID())
		}
		if got := td.VM().SharedBit().GPA(); got != 1<<47 {
			t.Errorf("shared bit %#x, want bit 47", uint64(got))
		}
		wantErrno(t, "INIT_VM twice", td.InitVM(th, tdx.InitVM{GPAW: 48}), errno.EINVAL)
		// The HKID pool has two keys: a third TD finds none.
		td2, _ := newTD(th, h)
		if err := td2.InitVM(th, tdx.InitVM{GPAW: 48}); err != nil {
			t.Fatal(err)
		}
		td3, _ := newTD(th, h)
		wantErrno(t, "no free HKID", td3.InitVM(th, tdx.InitVM{GPAW: 48}), errno.ENOSPC)
		// A default VM is not a TD.
		vm4, _ := h.Sys.CreateVM(th, kvm.DefaultVM)
		if _, err := h.NewTD(vm4, tdx.Config{}); !errors.Is(err, errno.EINVAL) {
			t.Errorf("NewTD on a default VM: %v", err)
		}
		v, err := td.CreateVCPU(th, 0)
		if err != nil {
			t.Fatal(err)
		}
		r := tdx.MemRegion{SourceAddr: 4096, GPA: 0, NPages: 1}
		wantErrno(t, "INIT_MEM_REGION before INIT_VCPU", td.InitMemRegion(th, v, &r), errno.EINVAL)
		if err := v.InitVCPU(th); err != nil {
			t.Fatal(err)
		}
		wantErrno(t, "INIT_VCPU twice", v.InitVCPU(th), errno.EINVAL)
		if _, err := v.Accept(th, 0, addr.Level4K); !errors.Is(err, errno.EINVAL) {
			t.Errorf("KVM_RUN before FINALIZE: %v, want EINVAL", err)
		}
		if _, err := td.Finalize(th); err != nil {
			t.Fatal(err)
		}
		if _, err := td.Finalize(th); !errors.Is(err, errno.EINVAL) {
			t.Errorf("FINALIZE twice: %v, want EINVAL", err)
		}
		wantErrno(t, "INIT_MEM_REGION after FINALIZE", td.InitMemRegion(th, v, &r), errno.EINVAL)
		wantErrno(t, "INIT_VCPU after FINALIZE", v.InitVCPU(th), errno.EINVAL)
	})
}

// KVM_TDX_INIT_MEM_REGION's argument checks, each with the kernel's errno.
func TestInitMemRegionErrnos(t *testing.T) {
	runTD(t, opts{seed: 1, noFinal: true}, func(th *sched.Thread, e *env) {
		v := e.m.VCPUs[0]
		src, err := e.m.User.Mmap(8 * addr.KiB)
		if err != nil {
			t.Fatal(err)
		}
		shared := uint64(e.m.VM.SharedBit().GPA())
		for _, c := range []struct {
			name string
			r    tdx.MemRegion
			want errno.Errno
		}{
			{"unknown flag", tdx.MemRegion{SourceAddr: src, GPA: 0, NPages: 1, Flags: 2}, errno.EINVAL},
			{"source 0", tdx.MemRegion{SourceAddr: 0, GPA: 0, NPages: 1}, errno.EINVAL},
			{"source unaligned", tdx.MemRegion{SourceAddr: src + 1, GPA: 0, NPages: 1}, errno.EINVAL},
			{"gpa unaligned", tdx.MemRegion{SourceAddr: src, GPA: 100, NPages: 1}, errno.EINVAL},
			{"no pages", tdx.MemRegion{SourceAddr: src, GPA: 0, NPages: 0}, errno.EINVAL},
			{"wraps", tdx.MemRegion{SourceAddr: src, GPA: ^uint64(0) &^ 0xfff, NPages: 2}, errno.EINVAL},
			{"shared gpa", tdx.MemRegion{SourceAddr: src, GPA: shared, NPages: 1}, errno.EINVAL},
			{"outside memslots", tdx.MemRegion{SourceAddr: src, GPA: 1 << 40, NPages: 1}, errno.EINVAL},
			{"source not mapped", tdx.MemRegion{SourceAddr: 4096, GPA: 0, NPages: 1}, errno.EFAULT},
		} {
			r := c.r
			wantErrno(t, c.name, e.td.InitMemRegion(th, v, &r), c.want)
		}
		// A GFN that is not private is refused by kvm_gmem_populate.
		e.mustSetAttrs(th, addr.MiB, 4*addr.KiB, false)
		r := tdx.MemRegion{SourceAddr: src, GPA: addr.MiB, NPages: 1}
		wantErrno(t, "shared GFN", e.td.InitMemRegion(th, v, &r), errno.EINVAL)
		// Progress is reported in the struct: two pages, the second refused.
		e.mustSetAttrs(th, addr.MiB, 4*addr.KiB, true)
		e.mustSetAttrs(th, addr.MiB+4*addr.KiB, 4*addr.KiB, false)
		r = tdx.MemRegion{SourceAddr: src, GPA: addr.MiB, NPages: 2}
		wantErrno(t, "second page shared", e.td.InitMemRegion(th, v, &r), errno.EINVAL)
		if r.NPages != 1 || r.GPA != addr.MiB+4*addr.KiB || r.SourceAddr != src+4*addr.KiB {
			t.Errorf("progress after one page: %+v", r)
		}
		if e.td.Stats().PagesAdded != 1 {
			t.Errorf("%d pages added, want 1", e.td.Stats().PagesAdded)
		}
		// Kernel: tdx_vcpu_init_mem_region(): a pending signal stops the
		// loop with -EINTR before the next page, nothing added, the region
		// unchanged; cleared, the same call resumes.
		e.mustSetAttrs(th, addr.MiB+4*addr.KiB, 4*addr.KiB, true)
		th.SetSignalPending(true)
		wantErrno(t, "signal pending", e.td.InitMemRegion(th, v, &r), errno.EINTR)
		if r.NPages != 1 || e.td.Stats().PagesAdded != 1 {
			t.Errorf("after EINTR: %+v, %d pages added", r, e.td.Stats().PagesAdded)
		}
		th.SetSignalPending(false)
		if err := e.td.InitMemRegion(th, v, &r); err != nil || r.NPages != 0 || e.td.Stats().PagesAdded != 2 {
			t.Errorf("resumed: %v, %+v, %d pages added", err, r, e.td.Stats().PagesAdded)
		}
		e.teardown(th)
	})
}

// The TD build maps the PFN guest_memfd handed to kvm_gmem_populate into
// the mirror root directly (the "KVM: TDX: Decouple TDX init mem region from kvm_gmem_populate()" RFC): no page fault is synthesized, the
// invalidate lock is taken once per page and never recursively, and the
// MRTD is the hand-computed one.
func TestInitMemRegionDecoupled(t *testing.T) {
	img := make([]byte, 40*addr.KiB+123)
	for i := range img {
		img[i] = byte(i*13 + 5)
	}
	e := runTD(t, opts{seed: 3, image: img, noFinal: true, dynamic: true}, func(th *sched.Thread, e *env) {
		if f := e.td.MMU().Stats().Faults; f != 0 {
			t.Errorf("%d page faults during the TD build, want 0 (no synthesized fault)", f)
		}
		mrtd, err := e.td.Finalize(th)
		if err != nil {
			t.Fatal(err)
		}
		gpa := uint64(16*addr.MiB) - 44*addr.KiB
		want := mrtdvec.Hand([]mrtdvec.Region{{GPA: gpa, Data: img, Measure: true}})
		if string(mrtd) != string(want) {
			t.Errorf("MRTD %x, want %x", mrtd, want)
		}
		// The image is in the TD: the guest reads what was added.
		errs := e.vcpus(th, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
			if i != 0 {
				return nil
			}
			tag, err := v.Read(vt, addr.GPA(gpa))
			if err == nil && tag == 0 {
				t.Error("the first image page reads as zero")
			}
			return err
		})
		if errs[0] != nil {
			t.Error(errs[0])
		}
		e.teardown(th)
	})
	if got := e.c.Calls()["TDH.MEM.PAGE.ADD"]; got != 11 {
		t.Errorf("%d TDH.MEM.PAGE.ADD, want 11", got)
	}
	if got := e.c.Calls()["TDH.MR.EXTEND"]; got != 11*16 {
		t.Errorf("%d TDH.MR.EXTEND, want 176", got)
	}
	e.noViolations()
	e.clean()
}

// MapGPA's operand checks and the exit to the VMM in 2 MiB chunks.
func TestMapGPA(t *testing.T) {
	runTD(t, opts{seed: 1}, func(th *sched.Thread, e *env) {
		shared := uint64(e.m.VM.SharedBit().GPA())
		var calls []tdx.MapGPAExit
		e.td.SetVMM(func(t *sched.Thread, v *tdx.VCPU, x tdx.MapGPAExit) error {
			calls = append(calls, x)
			if x.GPA == 6*addr.MiB {
				return errno.New("convert", errno.EAGAIN, "busy")
			}
			return nil
		})
		errs := e.vcpus(th, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
			if i != 0 {
				return nil
			}
			for _, c := range []struct {
				gpa, size, st, r11 uint64
			}{
				{shared | 4*addr.KiB, 4*addr.KiB + 1, tdx.TDVMCallAlignError, shared | 4*addr.KiB},
				{shared - 4*addr.KiB, 8 * addr.KiB, tdx.TDVMCallInvalidOperand, shared - 4*addr.KiB},
				{4 * addr.KiB, 0, tdx.TDVMCallInvalidOperand, 4 * addr.KiB},
				{1 << 48, 4 * addr.KiB, tdx.TDVMCallInvalidOperand, 1 << 48},
				{shared, 5 * addr.MiB, tdx.TDVMCallSuccess, shared + 5*addr.MiB},
				{4 * addr.MiB, 4 * addr.MiB, tdx.TDVMCallRetry, 6 * addr.MiB},
			} {
				st, r11, err := v.MapGPA(vt, c.gpa, c.size)
				if err != nil {
					return err
				}
				if st != c.st || r11 != c.r11 {
					t.Errorf("MapGPA(%#x, %#x) = %#x r11 %#x, want %#x r11 %#x", c.gpa, c.size, st, r11, c.st, c.r11)
				}
			}
			return nil
		})
		if errs[0] != nil {
			t.Fatal(errs[0])
		}
		want := []tdx.MapGPAExit{{0, 512, false}, {2 * addr.MiB, 512, false}, {4 * addr.MiB, 256, false}, {4 * addr.MiB, 512, true}, {6 * addr.MiB, 512, true}}
		if len(calls) != len(want) {
			t.Fatalf("VMM saw %+v, want %+v", calls, want)
		}
		for i := range want {
			if calls[i] != want[i] {
				t.Errorf("exit %d: %+v, want %+v", i, calls[i], want[i])
			}
		}
		e.td.SetVMM(nil)
		errs = e.vcpus(th, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
			if st, _, _ := v.MapGPA(vt, 0, 4*addr.KiB); st != tdx.TDVMCallSubfuncUnsupported {
				t.Errorf("MapGPA without a VMM handler: %#x", st)
			}
			return nil
		})
		e.teardown(th)
	})
}

// Dynamic PAMT: a pair per 2 MiB physical range holding a 4K private page,
// an S-EPT page or a control page, taken from TDX's own cache during
// faults — never from KVM's page-table caches (Dynamic PAMT v4 "KVM: TDX: Add x86 ops for external spt cache") — and charged to
// the VM; all of it returned at teardown.
func TestDynamicPAMTAccounting(t *testing.T) {
	runClean(t, opts{seed: 9, dynamic: true, record: true}, func(th *sched.Thread, e *env) {
		errs := e.vcpus(th, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
			return accept(vt, v, uint64(i)*2*addr.MiB, 2*addr.MiB)
		})
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		// Every 2M physical range holding a TD page has a pair and a
		// refcount equal to the TD pages in it.
		want := map[uint64]int32{}
		e.td.MMU().Leaves(mmu.MirrorRoot, func(l mmu.Leaf) bool { want[uint64(l.PFN>>9)]++; return true })
		e.td.MMU().Tables(mmu.MirrorRoot, func(tb mmu.Table) {
			if tb.HasExt {
				want[uint64(tb.External>>9)]++
			}
		})
		for _, p := range e.td.ControlPages() {
			want[uint64(p>>9)]++
		}
		// The pairs handed to PAMT.ADD come from TDX's own source.
		for _, ev := range e.rec.Events() {
			if ev.Name != "TDH.PHYMEM.PAMT.ADD" || ev.Status != 0 {
				continue
			}
			for _, hpa := range ev.Args[1:3] {
				fo, ok := e.host.Mem.FolioOf(addr.HPA(hpa).PFN())
				if !ok || e.host.Mem.SourceName(fo.Source) != "tdx.dpamt" || fo.Account != e.m.VM.Account() || !fo.Charged {
					t.Errorf("DPAMT page %#x: %+v (source %s), want tdx.dpamt charged to the VM", hpa, fo, e.host.Mem.SourceName(fo.Source))
				}
			}
		}
		if got := e.host.DPAMTRanges(); got != len(want) {
			t.Errorf("%d ranges with a pair, want %d", got, len(want))
		}
		for k, n := range want {
			if got := e.host.DPAMTRef(addr.PFN(k << 9)); got != n {
				t.Errorf("range %#x: refcount %d, want %d", k<<21, got, n)
			}
		}
		e.teardown(th)
	})
}
