package tdx_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/internal/testkit"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxmodule"
	"github.com/tdxsim/tdxsim/vmm"
)

// Four vCPUs fault and accept the same 512 KiB in different orders, while
// the VMM punches and converts part of it: every interleaving the seeds
// pick must end with the mirror root and the S-EPT in agreement, no
// violation, no deadlock, and a clean teardown.
func TestConcurrentFaults(t *testing.T) {
	seeds := testkit.Seeds(150, 20)
	var retries, frozenOrBusy int64
	for seed := range seeds {
		runClean(t, opts{seed: uint64(seed), vcpus: 4, dynamic: seed%2 == 0}, func(th *sched.Thread, e *env) {
			const span = 512 * addr.KiB
			errs := make([]error, 4)
			vcpus := sched.NewGroup(th, "vCPUs done")
			for i, v := range e.m.VCPUs {
				vcpus.Go("vcpu", func(vt *sched.Thread) error {
					defer v.Halt()
					// Each vCPU starts at a different page and wraps.
					for k := uint64(0); k < span; k += addr.PageSize {
						g := (k + uint64(i)*span/4) % span
						if err := accept(vt, v, g, addr.PageSize); err != nil {
							errs[i] = err
							return nil
						}
					}
					return nil
				})
			}
			th.Yield()
			// Meanwhile the VMM punches a hole the vCPUs may be faulting in.
			if err := e.m.PunchHole(th, 64*addr.KiB, 64*addr.KiB); err != nil {
				t.Errorf("seed %d: punch: %v", seed, err)
			}
			vcpus.Wait()
			for _, err := range errs {
				if err != nil && !errors.Is(err, tdx.ErrVE) {
					t.Errorf("seed %d: %v", seed, err)
				}
			}
			e.agree(0, span)
			s := e.td.MMU().Stats()
			retries += s.Retries
			frozenOrBusy += e.td.Stats().BusyRetries
			e.teardown(th)
		})
		if t.Failed() {
			t.Fatalf("seed %d failed", seed)
		}
	}
	if retries == 0 {
		t.Errorf("no fault ever retried over %d seeds: the test does not exercise the frozen-SPTE protocol", seeds)
	}
	t.Logf("%d seeds: %d RET_PF_RETRY, %d TDX_OPERAND_BUSY retries", seeds, retries, frozenOrBusy)
}

// A fault that finds the mirror entry frozen retries rather than touching
// it, and the S-EPT change it waits for completes.
func TestFrozenSPTESeenByConcurrentFault(t *testing.T) {
	saw := false
	for seed := uint64(0); seed < 60 && !saw; seed++ {
		runTD(t, opts{seed: seed, vcpus: 2}, func(th *sched.Thread, e *env) {
			errs := e.vcpus(th, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
				return accept(vt, v, 0, 16*addr.KiB)
			})
			for _, err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if e.td.MMU().Stats().Retries > 0 {
				saw = true
			}
			e.agree(0, 16*addr.KiB)
			e.teardown(th)
		})
	}
	if !saw {
		t.Error("two vCPUs faulting the same pages never raced in 60 seeds")
	}
}

// Injected TDX_OPERAND_BUSY on AUG and SEPT.ADD: the fault returns -EBUSY
// and retries; on BLOCK and REMOVE: tdh_do_no_vcpus blocks vCPU entry,
// kicks, and the second attempt succeeds. Nothing dies.
func TestInjectedBusyIsRetried(t *testing.T) {
	e := runTD(t, opts{seed: 11, dynamic: true}, func(th *sched.Thread, e *env) {
		n := map[tdxmodule.Leaf]int{}
		e.mod.SetInjector(func(leaf tdxmodule.Leaf, in tdxmodule.Regs) (tdxmodule.Status, bool) {
			switch leaf {
			case tdxmodule.LeafMemPageAug, tdxmodule.LeafMemSEPTAdd, tdxmodule.LeafMemRangeBlock, tdxmodule.LeafMemPageRemove:
				n[leaf]++
				if n[leaf]%3 == 1 { // the first of every three calls
					return tdxmodule.OperandBusy.With(tdxmodule.OpRCX), true
				}
			}
			return 0, false
		})
		errs := e.vcpus(th, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
			return accept(vt, v, uint64(i)*256*addr.KiB, 256*addr.KiB)
		})
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := e.m.PunchHole(th, 0, 128*addr.KiB); err != nil {
			t.Fatal(err)
		}
		e.mod.SetInjector(nil)
		st := e.td.Stats()
		if st.BusyRetries == 0 || st.NoVCPURetries == 0 {
			t.Errorf("busy retries %d, tdh_do_no_vcpus retries %d: both must be > 0", st.BusyRetries, st.NoVCPURetries)
		}
		if b, why := e.m.VM.Bugged(); b {
			t.Errorf("VM bugged on BUSY: %s", why)
		}
		if got := e.td.MMU().Stats().Mapped[1][0]; got != 128-32 {
			t.Errorf("%d private leaves, want 96", got)
		}
		e.agree(0, 512*addr.KiB)
		e.teardown(th)
	})
	e.clean()
}

// An injected failure of TDH.MEM.PAGE.REMOVE: KVM_BUG_ON marks the VM
// dead, every later ioctl is EIO, vCPUs stop with EIO, and the page is not
// handed back to the host while the S-EPT still maps it: hostmem refuses
// the free guest_memfd attempts (the window "KVM: TDX: Drop superfluous page pinning in S-EPT management" accepts upstream is
// reported as a violation) and the page stays allocated until teardown
// reclaims what it can.
func TestInjectedRemoveFailureKillsVM(t *testing.T) {
	var victim addr.PFN
	e := runTD(t, opts{seed: 12, dynamic: true}, func(th *sched.Thread, e *env) {
		errs := e.vcpus(th, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
			if i == 0 {
				return accept(vt, v, 0, 64*addr.KiB)
			}
			return nil
		})
		if errs[0] != nil {
			t.Fatal(errs[0])
		}
		l, ok := e.mirrorLeaf(4 * addr.KiB)
		if !ok {
			t.Fatal("page not mapped")
		}
		victim = l.PFN
		e.mod.SetInjector(func(leaf tdxmodule.Leaf, in tdxmodule.Regs) (tdxmodule.Status, bool) {
			if leaf == tdxmodule.LeafMemPageRemove && in.RCX&^0xfff == 4*addr.KiB {
				return tdxmodule.EPTEntryStateIncorrect.With(tdxmodule.OpRCX), true
			}
			return 0, false
		})
		// The VMM punches the page out: KVM's removal fails.
		if err := e.m.PunchHole(th, 4*addr.KiB, 4*addr.KiB); err != nil {
			t.Errorf("punch hole: %v (the kernel's punch succeeds)", err)
		}
		e.mod.SetInjector(nil)
		if b, _ := e.m.VM.Bugged(); !b || !e.m.VM.Dead() {
			t.Fatal("a failed TDH.MEM.PAGE.REMOVE must KVM_BUG_ON the VM")
		}
		if _, ok := e.septMapped(4 * addr.KiB); !ok {
			t.Error("the S-EPT should still map the page whose removal failed")
		}
		if !e.host.Mem.IsAllocated(victim) {
			t.Errorf("%v went back to the host while the S-EPT still maps it", victim)
		}
		// Every ioctl is EIO now; vCPUs stop.
		if err := e.setAttrs(th, 0, 4*addr.KiB, true); !errors.Is(err, errno.EIO) {
			t.Errorf("ioctl on a dead VM: %v, want EIO", err)
		}
		errs = e.vcpus(th, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
			_, err := v.Accept(vt, 128*addr.KiB, addr.Level4K)
			return err
		})
		for _, err := range errs {
			if !errors.Is(err, errno.EIO) {
				t.Errorf("vCPU on a dead VM: %v, want EIO", err)
			}
		}
		e.teardown(th)
	})
	var refused bool
	for _, v := range e.c.Violations() {
		if v.Name == hostmem.RuleFreeTDXOwned && addr.PFN(v.Args[0]) == victim {
			refused = true
		}
	}
	if !refused {
		t.Error("no record of guest_memfd trying to free the still-mapped page")
	}
	// Nothing reclaims a private page KVM failed to remove (KVM only
	// reclaims S-EPT and control pages at teardown), so the module keeps
	// it assigned and guest_memfd keeps it aside: it never returns to the
	// allocator, even after teardown. That leak is on purpose.
	if !e.host.Mem.IsAllocated(victim) {
		t.Errorf("%v went back to the host after teardown although the module still assigns it", victim)
	}
}

// TDs initialised at the same time on real goroutines (the parallel
// scheduler: KVM_TDX_INIT_VM of different VMs holds no common lock) take
// HKIDs from the host's pool while another thread reads it, without a
// data race (go test -race) and without two TDs getting the same HKID.
func TestHKIDPoolConcurrent(t *testing.T) {
	const tds = 32
	host, err := vmm.NewHost(vmm.HostConfig{Bytes: 1 << 30, Packages: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var kt [tds]*tdx.TD
	testkit.Run(t, 1, nil, func(th *sched.Thread) {
		for i := range tds {
			if kt[i], err = newTD(th, host); err != nil {
				t.Fatal(err)
			}
		}
	})
	var errs [tds]error
	s := sched.New(sched.Parallel, 1, nil)
	for i := range tds {
		s.Go(fmt.Sprintf("vmm%d", i), func(th *sched.Thread) {
			errs[i] = kt[i].InitVM(th, tdx.InitVM{GPAW: 48, MaxVCPUs: 1})
		})
	}
	s.Go("reader", func(*sched.Thread) { _ = host.HKIDsInUse() })
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	seen := map[int]int{}
	for i := range tds {
		if errs[i] != nil {
			t.Fatalf("TD %d: %v", i, errs[i])
		}
		if j, dup := seen[kt[i].HKID()]; dup || kt[i].HKID() == 0 {
			t.Errorf("TD %d has HKID %d (TD %d has it too: %v)", i, kt[i].HKID(), j, dup)
		}
		seen[kt[i].HKID()] = i
	}
	if n := host.HKIDsInUse(); n != tds {
		t.Errorf("%d HKIDs in use, want %d", n, tds)
	}
	testkit.Run(t, 1, nil, func(th *sched.Thread) {
		for i := range tds {
			if err := kt[i].VM().Close(th); err != nil {
				t.Error(err)
			}
		}
	})
	if n := host.HKIDsInUse(); n != 0 {
		t.Errorf("%d HKIDs in use after every VM is closed", n)
	}
}
