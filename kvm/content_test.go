package kvm_test

import (
	"errors"
	"testing"

	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/internal/testkit"
	"github.com/tdxsim/tdxsim/kvm"
)

// contentHost is a host whose in-place guest_memfd takes content modes
// (RFC v5 of the in-place conversion series).
func contentHost() testkit.Config {
	c := kvm.DefaultConfig()
	c.GmemContentModes = true
	return testkit.Config{KVM: &c}
}

// contentFile is a TD's in-place guest_memfd of 16 pages, starting
// shared and mapped by the host, with one byte written on pages 1..4.
func contentFile(w *world, typ kvm.VMType) (*kvm.VM, *gmem.File, *gmem.Mapping) {
	vm, _, f := w.recorded(typ, gmem.CreateArgs{Size: 16 * 4096, Flags: gmem.FlagMMAP | gmem.FlagInitShared, InPlace: true}, 16*4096)
	mp, err := f.Mmap(w.th, 0, 16*4096, gmem.ProtRead|gmem.ProtWrite, true)
	if err != nil {
		w.t.Fatal(err)
	}
	for p, v := range map[uint64]byte{1: 0x5a, 2: 0x66, 3: 0x77, 4: 0x11} {
		if err := mp.Store(w.th, p*4096, v); err != nil {
			w.t.Fatal(err)
		}
	}
	return vm, f, mp
}

// byteAt is the first byte of file page p as the host memory holds it,
// shared or private (0 when only a zero tag is known).
func byteAt(w *world, f *gmem.File, p uint64) byte {
	pfn, ok := f.PFNAt(p)
	if !ok {
		w.t.Fatalf("page %d not allocated", p)
	}
	if b := w.Mem.Bytes(pfn); b != nil {
		return b[0]
	}
	if w.Mem.Tag(pfn) != 0 {
		w.t.Fatalf("page %d has tag %#x and no bytes", p, uint64(w.Mem.Tag(pfn)))
	}
	return 0
}

// TestContentModeErrnos is every errno case of KVM_SET_MEMORY_ATTRIBUTES2's
// content modes on a TD. Series: "[PATCH RFC v5 22/53] KVM: guest_memfd:
// Apply content modes while setting memory attributes" (EINVAL for an
// unknown bit or both, before the range is checked; EOPNOTSUPP with
// error_offset for a mode not supported for the direction, ZERO to
// private never), "[PATCH RFC v5 26/53] KVM: x86: Support SNP and TDX
// applying content modes" (a TD: ZERO, and PRESERVE only to private
// before pre_fault_allowed), both
// 20260428-gmem-inplace-conversion-v5-{22,26}-d8608ccfca22@google.com.
func TestContentModeErrnos(t *testing.T) {
	runWith(t, contentHost(), func(w *world) {
		vm, f, mp := contentFile(w, kvm.TDXVM)
		const pg = 4096
		for _, c := range []struct {
			name                    string
			off, size, attrs, flags uint64
			want                    errno.Errno
			at                      uint64 // error_offset for EOPNOTSUPP
		}{
			{"unknown flag bit 2", pg, pg, gmem.AttrPrivate, 1 << 2, errno.EINVAL, 0},
			{"unknown flag bit 63", pg, pg, 0, 1 << 63, errno.EINVAL, 0},
			{"ZERO and PRESERVE", pg, pg, 0, gmem.ContentZero | gmem.ContentPreserve, errno.EINVAL, 0},
			{"flags checked before the range", 1, 0, 0, 1 << 2, errno.EINVAL, 0},
			{"ZERO to private is never supported", 2 * pg, pg, gmem.AttrPrivate, gmem.ContentZero, errno.EOPNOTSUPP, 2 * pg},
			{"PRESERVE to shared on a TD", 3 * pg, pg, 0, gmem.ContentPreserve, errno.EOPNOTSUPP, 3 * pg},
			{"range checks after the flags", 1, pg, 0, gmem.ContentZero, errno.EINVAL, 0},
		} {
			off, err := f.SetAttributes(w.th, c.off, c.size, c.attrs, c.flags)
			testkit.WantErrno(t, c.name, err, c.want)
			if c.want == errno.EOPNOTSUPP && off != c.at {
				t.Errorf("%s: error_offset %#x, want %#x", c.name, off, c.at)
			}
		}
		for p := uint64(0); p < 16; p++ {
			if f.IsPrivate(p) {
				t.Fatalf("a refused conversion changed page %d", p)
			}
		}
		// PRESERVE to private before KVM_TDX_FINALIZE_VM: the contents
		// stay (the populate-in-place flow of RFC v5 patch 26).
		if _, err := f.SetAttributes(w.th, pg, 3*pg, gmem.AttrPrivate, gmem.ContentPreserve); err != nil {
			t.Fatalf("PRESERVE to private before finalize: %v", err)
		}
		if !f.IsPrivate(1) || byteAt(w, f, 1) != 0x5a || byteAt(w, f, 3) != 0x77 {
			t.Errorf("PRESERVE lost the shared contents: %#x %#x", byteAt(w, f, 1), byteAt(w, f, 3))
		}
		if _, err := mp.Load(w.th, pg); !errors.Is(err, gmem.ErrSIGBUS) {
			t.Errorf("host read of a private page: %v, want SIGBUS", err)
		}
		// To shared with ZERO: every allocated page reads zero, although
		// the page was never mapped in the S-EPT (no TDX reset).
		if _, err := f.SetAttributes(w.th, pg, pg, 0, gmem.ContentZero); err != nil {
			t.Fatalf("ZERO to shared: %v", err)
		}
		if v, err := mp.Load(w.th, pg); err != nil || v != 0 {
			t.Errorf("after ZERO the host reads %#x, %v; want 0", v, err)
		}
		// DEFAULT to shared: no guarantee, and guest_memfd does nothing.
		if _, err := f.SetAttributes(w.th, 2*pg, pg, 0, 0); err != nil {
			t.Fatal(err)
		}
		if v, _ := mp.Load(w.th, 2*pg); v != 0x66 {
			t.Errorf("DEFAULT to shared: host reads %#x, want the old 0x66 (what ZERO is for)", v)
		}
		// ZERO applies to the whole range, pages already shared too.
		if _, err := f.SetAttributes(w.th, 4*pg, pg, 0, gmem.ContentZero); err != nil {
			t.Fatal(err)
		}
		if v, _ := mp.Load(w.th, 4*pg); v != 0 {
			t.Errorf("ZERO on an already-shared page: host reads %#x, want 0", v)
		}
		// After KVM_TDX_FINALIZE_VM (pre_fault_allowed) PRESERVE is gone.
		vm.SetPreFaultAllowed()
		off, err := f.SetAttributes(w.th, 5*pg, pg, gmem.AttrPrivate, gmem.ContentPreserve)
		testkit.WantErrno(t, "PRESERVE to private after finalize", err, errno.EOPNOTSUPP)
		if off != 5*pg || f.IsPrivate(5) {
			t.Errorf("error_offset %#x (want %#x), page private %v", off, 5*pg, f.IsPrivate(5))
		}
		if _, err := f.SetAttributes(w.th, 5*pg, pg, gmem.AttrPrivate, 0); err != nil {
			t.Errorf("DEFAULT after finalize: %v", err)
		}
		mp.Munmap(w.th)
		// The capability still reports both (for_cap), and /dev/kvm too.
		if n, _ := vm.CheckExtension(kvm.CapMemoryAttributes2Flags); n != 3 {
			t.Errorf("KVM_CAP_MEMORY_ATTRIBUTES2_FLAGS on a TD = %d, want 3", n)
		}
		if n := w.KVM.CheckExtension(kvm.CapMemoryAttributes2Flags); n != 3 {
			t.Errorf("KVM_CAP_MEMORY_ATTRIBUTES2_FLAGS on /dev/kvm = %d, want 3", n)
		}
	})
}

// TestContentModesSWProtected: a software-protected VM takes PRESERVE in
// both directions, but never ZERO to private. Series: "[PATCH RFC v5
// 23/53] KVM: x86: Support SW_PROTECTED_VM in applying content modes".
func TestContentModesSWProtected(t *testing.T) {
	runWith(t, contentHost(), func(w *world) {
		_, f, mp := contentFile(w, kvm.SWProtectedVM)
		if _, err := f.SetAttributes(w.th, 4096, 4096, gmem.AttrPrivate, gmem.ContentPreserve); err != nil {
			t.Fatal(err)
		}
		if _, err := f.SetAttributes(w.th, 4096, 4096, 0, gmem.ContentPreserve); err != nil {
			t.Fatalf("PRESERVE to shared on a software-protected VM: %v", err)
		}
		if v, _ := mp.Load(w.th, 4096); v != 0x5a {
			t.Errorf("PRESERVE round trip: host reads %#x, want 0x5a", v)
		}
		_, err := f.SetAttributes(w.th, 4096, 4096, gmem.AttrPrivate, gmem.ContentZero)
		testkit.WantErrno(t, "ZERO to private", err, errno.EOPNOTSUPP)
		mp.Munmap(w.th)
	})
}

// TestNoContentModes: without content modes (before RFC v5, and from v6 on)
// any flag is EINVAL and the capability answers 0; with per-VM attributes
// on it answers 0 as well (RFC v5 patch 28: "if vm_memory_attributes is
// enabled, return 0").
func TestNoContentModes(t *testing.T) {
	run(t, func(w *world) {
		vm, f, mp := contentFile(w, kvm.TDXVM)
		for _, fl := range []uint64{gmem.ContentZero, gmem.ContentPreserve} {
			_, err := f.SetAttributes(w.th, 4096, 4096, gmem.AttrPrivate, fl)
			testkit.WantErrno(t, "a content flag without content modes", err, errno.EINVAL)
		}
		if n, _ := vm.CheckExtension(kvm.CapMemoryAttributes2Flags); n != 0 {
			t.Errorf("capability without content modes = %d, want 0", n)
		}
		mp.Munmap(w.th)
	})
	cfg := contentHost()
	cfg.KVM.InPlaceConversion = false
	runWith(t, cfg, func(w *world) {
		vm := w.vm(kvm.TDXVM)
		if n, _ := vm.CheckExtension(kvm.CapMemoryAttributes2Flags); n != 0 {
			t.Errorf("capability with per-VM attributes = %d, want 0", n)
		}
		if n := w.KVM.CheckExtension(kvm.CapMemoryAttributes2Flags); n != 0 {
			t.Errorf("/dev/kvm capability with per-VM attributes = %d, want 0", n)
		}
	})
}
