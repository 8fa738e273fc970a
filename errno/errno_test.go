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
