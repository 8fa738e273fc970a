package errno

import (
	"errors"
	"fmt"
	"testing"
)

func TestErrnoNamesAndWrapping(t *testing.T) {
	if EOPNOTSUPP.String() != "EOPNOTSUPP" || uint16(EOPNOTSUPP) != 95 {
		t.Fatalf("EOPNOTSUPP = %d %s, want Linux 95", uint16(EOPNOTSUPP), EOPNOTSUPP)
	}
	if Errno(200).String() != "errno 200" {
		t.Fatalf("unknown errno printed %q", Errno(200).String())
	}
	err := fmt.Errorf("outer: %w", New("KVM_CREATE_GUEST_MEMFD", EINVAL, "size must be page aligned"))
	if !errors.Is(err, EINVAL) || errors.Is(err, EBADF) {
		t.Fatalf("errors.Is on %v wrong", err)
	}
	if Of(err) != EINVAL || Of(nil) != 0 || Of(errors.New("x")) != EIO {
		t.Fatalf("Of wrong")
	}
	want := "outer: KVM_CREATE_GUEST_MEMFD: EINVAL: size must be page aligned"
	if err.Error() != want {
		t.Fatalf("got %q want %q", err.Error(), want)
	}
}

func TestWrapKeepsTheCause(t *testing.T) {
	cause := errors.New("hostmem: alloc: out of memory")
	err := fmt.Errorf("step: %w", Wrapf("kvm_mmu_topup_memory_cache", ENOMEM, cause, "%s", "pte_list_desc"))
	if !errors.Is(err, ENOMEM) || !errors.Is(err, cause) || errors.Is(err, EIO) {
		t.Fatalf("errors.Is on %v wrong", err)
	}
	if Of(err) != ENOMEM {
		t.Fatalf("Of(%v) = %v", err, Of(err))
	}
	want := "step: kvm_mmu_topup_memory_cache: ENOMEM: pte_list_desc: hostmem: alloc: out of memory"
	if err.Error() != want {
		t.Fatalf("got %q want %q", err.Error(), want)
	}
	// The outer errno wins in Of, the inner one is still found by Is.
	nested := Wrap("tdx_pamt_get", EIO, New("alloc", ENOMEM, ""))
	if Of(nested) != EIO || !errors.Is(nested, ENOMEM) {
		t.Fatalf("nested: Of %v, Is ENOMEM %v", Of(nested), errors.Is(nested, ENOMEM))
	}
	if Wrap("mmap", ENOMEM, cause).Error() != "mmap: ENOMEM: hostmem: alloc: out of memory" {
		t.Fatalf("Wrap text %q", Wrap("mmap", ENOMEM, cause))
	}
}
