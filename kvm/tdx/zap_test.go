package tdx_test

import (
	"errors"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
)

// Which events zap private memory ("KVM: x86/tdp_mmu: Don't zap private
// pages for unsupported cases"), one test each.

// acceptAndShare accepts 1 MiB of private memory at GPA 0 on vCPU 0 and
// touches 1 MiB of shared memory at GPA 2 MiB through the shared alias
// (after converting it), so both roots hold leaves.
func acceptAndShare(t *testing.T, th *sched.Thread, e *env) {
	t.Helper()
	errs := e.vcpus(th, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
		if i != 0 {
			return nil
		}
		if err := accept(vt, v, 0, addr.MiB); err != nil {
			return err
		}
		shared := uint64(e.m.VM.SharedBit().GPA())
		if st, _, err := v.MapGPA(vt, 2*addr.MiB|shared, addr.MiB); err != nil || st != tdx.TDVMCallSuccess {
			t.Errorf("MapGPA to shared: status %#x, %v", st, err)
		}
		for g := uint64(2 * addr.MiB); g < 3*addr.MiB; g += addr.PageSize {
			if err := v.Write(vt, addr.GPA(g|shared), 0x5a); err != nil {
				return err
			}
		}
		return nil
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s := e.td.MMU().Stats()
	if s.Mapped[1][0] != 256 || s.Mapped[0][0] != 256 {
		t.Fatalf("setup: mirror %d, direct %d leaves; want 256 each", s.Mapped[1][0], s.Mapped[0][0])
	}
}

func TestZapAttributeToSharedZapsPrivate(t *testing.T) {
	runClean(t, opts{seed: 1, dynamic: true}, func(th *sched.Thread, e *env) {
		acceptAndShare(t, th, e)
		removes := e.td.Stats().PagesRemoved
		if err := e.m.VM.SetMemoryAttributes(th, kvm.MemoryAttributes{Address: 0, Size: 64 * addr.KiB, Attributes: 0}); err != nil {
			t.Fatal(err)
		}
		if got := e.td.Stats().PagesRemoved - removes; got != 16 {
			t.Errorf("attribute change to shared over 16 pages removed %d private pages, want 16", got)
		}
		for g := uint64(0); g < 64*addr.KiB; g += addr.PageSize {
			if _, ok := e.mirrorLeaf(g); ok {
				t.Errorf("gpa %#x still in the mirror root", g)
			}
			if _, ok := e.septMapped(g); ok {
				t.Errorf("gpa %#x still in the S-EPT", g)
			}
		}
		e.agree(0, addr.MiB)
		e.teardown(th)
	})
}

func TestZapMemslotDeleteZapsPrivateLeavesOnly(t *testing.T) {
	runClean(t, opts{seed: 2, dynamic: true}, func(th *sched.Thread, e *env) {
		acceptAndShare(t, th, e)
		before := e.td.MMU().Stats()
		septBefore, _ := e.mod.TD(e.td.TDR())
		if err := e.m.VM.SetUserMemoryRegion2(th, kvm.Region{Slot: 0, Flags: kvm.MemGuestMemfd, MemorySize: 0,
			GuestMemfd: kvm.FD{File: e.m.Gmem}}); err != nil {
			t.Fatal(err)
		}
		after := e.td.MMU().Stats()
		if after.Mapped[1][0] != 0 || after.Mapped[0][0] != 0 {
			t.Errorf("after memslot deletion %d private and %d shared leaves remain", after.Mapped[1][0], after.Mapped[0][0])
		}
		if after.PageTables != before.PageTables {
			t.Errorf("memslot deletion freed page tables: %v -> %v (leaves only)", before.PageTables, after.PageTables)
		}
		septAfter, _ := e.mod.TD(e.td.TDR())
		if septAfter.SEPTPages != septBefore.SEPTPages {
			t.Errorf("S-EPT pages %d -> %d: deletion must leave non-leaf S-EPT pages", septBefore.SEPTPages, septAfter.SEPTPages)
		}
		e.agree(0, 4*addr.MiB)
		e.teardown(th)
	})
}

func TestZapMMUNotifierNeverZapsPrivate(t *testing.T) {
	runClean(t, opts{seed: 3, dynamic: true}, func(th *sched.Thread, e *env) {
		acceptAndShare(t, th, e)
		// munmap-like invalidation of the whole guest's userspace range:
		// the shared backing goes, private memory has no userspace mapping.
		if err := e.m.User.Discard(th, e.m.SharedHVA(0), 16*addr.MiB); err != nil {
			t.Fatal(err)
		}
		s := e.td.MMU().Stats()
		if s.Mapped[1][0] != 256 {
			t.Errorf("MMU-notifier invalidation zapped private memory: %d mirror leaves, want 256", s.Mapped[1][0])
		}
		if s.Mapped[0][0] != 0 {
			t.Errorf("MMU-notifier invalidation left %d shared leaves, want 0", s.Mapped[0][0])
		}
		// The MMU-notifier release zaps the direct root only, too.
		e.td.MMU().ZapAll(th)
		if got := e.td.MMU().Stats().Mapped[1][0]; got != 256 {
			t.Errorf("notifier release zapped private memory: %d mirror leaves", got)
		}
		// Accepted private content is still there.
		errs := e.vcpus(th, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
			if i != 0 {
				return nil
			}
			_, err := v.Read(vt, 0)
			return err
		})
		if errs[0] != nil {
			t.Errorf("guest read after notifier: %v", errs[0])
		}
		e.agree(0, addr.MiB)
		e.teardown(th)
	})
}

func TestZapMemtypeNeverZapsPrivate(t *testing.T) {
	for _, zapPrivate := range []bool{false, true} {
		name := "upstream"
		if zapPrivate {
			name = "zap_private_on_notifier"
		}
		t.Run(name, func(t *testing.T) {
			var lost bool
			runClean(t, opts{seed: 4, dynamic: true, mmu: mmu.Config{ZapPrivateOnNotifier: zapPrivate}}, func(th *sched.Thread, e *env) {
				acceptAndShare(t, th, e)
				e.m.VM.ZapGFNRangeMemtype(th, 0, addr.GFN(4*addr.MiB>>addr.PageShift))
				s := e.td.MMU().Stats()
				if s.Mapped[0][0] != 0 {
					t.Errorf("memtype change left %d shared leaves", s.Mapped[0][0])
				}
				want := int64(256)
				if zapPrivate {
					want = 0
				}
				if s.Mapped[1][0] != want {
					t.Errorf("memtype change: %d mirror leaves, want %d", s.Mapped[1][0], want)
				}
				// The guest touches its accepted memory again: with the
				// rejected policy the page comes back PENDING (#VE): the
				// accepted content is lost.
				errs := e.vcpus(th, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
					if i != 0 {
						return nil
					}
					_, err := v.Read(vt, 0)
					return err
				})
				lost = errs[0] != nil && errors.Is(errs[0], tdx.ErrVE)
				e.teardown(th)
			})
			if lost != zapPrivate {
				t.Errorf("accepted memory lost = %v, want %v", lost, zapPrivate)
			}
		})
	}
}

func TestZapGmemPunchAndMemoryFailure(t *testing.T) {
	runClean(t, opts{seed: 5, dynamic: true}, func(th *sched.Thread, e *env) {
		acceptAndShare(t, th, e)
		if err := e.m.PunchHole(th, 0, 256*addr.KiB); err != nil {
			t.Fatal(err)
		}
		if got := e.td.MMU().Stats().Mapped[1][0]; got != 192 {
			t.Errorf("after punching 64 pages, %d mirror leaves, want 192", got)
		}
		if err := e.m.Gmem.MemoryFailure(th, 128); err != nil {
			t.Fatal(err)
		}
		if _, ok := e.mirrorLeaf(128 << addr.PageShift); ok {
			t.Error("memory failure left the poisoned page mapped")
		}
		e.agree(0, addr.MiB)
		e.teardown(th)
	})
}

// The mirror root lives as long as the VM: nothing but teardown replaces it.
func TestMirrorRootNeverReplaced(t *testing.T) {
	runClean(t, opts{seed: 6, dynamic: true}, func(th *sched.Thread, e *env) {
		acceptAndShare(t, th, e)
		var root mmu.Table
		e.td.MMU().Tables(mmu.MirrorRoot, func(tb mmu.Table) {
			if tb.Level == mmu.RootLevel {
				root = tb
			}
		})
		e.td.MMU().ZapAll(th)
		e.m.VM.ZapGFNRangeMemtype(th, 0, 1<<20)
		if err := e.m.VM.SetMemoryAttributes(th, kvm.MemoryAttributes{Size: 16 * addr.MiB, Attributes: 0}); err != nil {
			t.Fatal(err)
		}
		var after mmu.Table
		e.td.MMU().Tables(mmu.MirrorRoot, func(tb mmu.Table) {
			if tb.Level == mmu.RootLevel {
				after = tb
			}
		})
		if after.PFN != root.PFN {
			t.Errorf("mirror root moved from %v to %v", root.PFN, after.PFN)
		}
		info, _ := e.mod.TD(e.td.TDR())
		if info.SEPTPages == 0 {
			t.Error("S-EPT pages freed while the TD lives")
		}
		e.teardown(th)
	})
}

// gmem release (closing the file) zaps private leaves while the HKID is
// still assigned; the VM is destroyed only afterwards.
func TestTeardownOrder(t *testing.T) {
	e := runTD(t, opts{seed: 7, dynamic: true, record: true}, func(th *sched.Thread, e *env) {
		acceptAndShare(t, th, e)
		e.teardown(th)
	})
	var order []string
	for _, ev := range e.rec.Events() {
		switch {
		case ev.Name == "TDH.MEM.PAGE.REMOVE" && (len(order) == 0 || order[len(order)-1] != "remove"):
			order = append(order, "remove")
		case ev.Name == "TDH.MNG.KEY.FREEID":
			order = append(order, "freeid")
		case ev.Name == "TDH.PHYMEM.PAGE.RECLAIM" && (len(order) == 0 || order[len(order)-1] != "reclaim"):
			order = append(order, "reclaim")
		}
	}
	if got := len(order); got != 3 || order[0] != "remove" || order[1] != "freeid" || order[2] != "reclaim" {
		t.Errorf("teardown order %v, want [remove freeid reclaim]", order)
	}
	e.noViolations()
	e.clean()
}

// Kernel: arch/x86/kvm/x86.c kvm_noncoherent_dma_assignment_start_or_stop()
// zaps only with KVM_X86_QUIRK_IGNORE_GUEST_PAT, which TDX disallows
// (Series: "[PATCH v4 00/28] KVM: x86/mmu: TDX post-populate cleanups",
// 20251030200951.3402865-1-seanjc@google.com): under MemtypeZapNone a
// memory-type change leaves a TD's shared and private leaves alone.
func TestZapMemtypeNoneLeavesTDAlone(t *testing.T) {
	kc := kvm.DefaultConfig()
	kc.MemtypeZap = kvm.MemtypeZapNone
	runClean(t, opts{seed: 4, dynamic: true, kvm: &kc}, func(th *sched.Thread, e *env) {
		acceptAndShare(t, th, e)
		before := e.td.MMU().Stats()
		e.m.VM.ZapGFNRangeMemtype(th, 0, addr.GFN(4*addr.MiB>>addr.PageShift))
		after := e.td.MMU().Stats()
		if after.Mapped != before.Mapped || before.Mapped[0][0] == 0 || before.Mapped[1][0] != 256 {
			t.Errorf("memtype change under MemtypeZapNone: leaves %v -> %v", before.Mapped, after.Mapped)
		}
		e.teardown(th)
	})
}
