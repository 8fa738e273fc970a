package fd

import (
	"errors"
	"testing"

	"github.com/tdxsim/tdxsim/errno"
)

func TestState(t *testing.T) {
	var s State
	if err := s.Check("ioctl", "VM"); err != nil || s.Closed() {
		t.Fatalf("a new fd: Check %v, Closed %v", err, s.Closed())
	}
	if err := s.Close("VM"); err != nil {
		t.Fatalf("first close: %v", err)
	}
	for what, err := range map[string]error{"Check": s.Check("ioctl", "VM"), "second Close": s.Close("VM")} {
		if !errors.Is(err, errno.EBADF) {
			t.Errorf("%s on a closed fd: %v, want EBADF", what, err)
		}
	}
	if !s.Closed() {
		t.Errorf("Closed after Close: false")
	}
}
