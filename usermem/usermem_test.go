package usermem

import (
	"errors"
	"testing"

	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/sched"
)

type recNotifier struct{ calls [][2]uint64 }

func (r *recNotifier) MMUNotifierInvalidate(t *sched.Thread, hva, size uint64) {
	r.calls = append(r.calls, [2]uint64{hva, size})
}

// Pages appear on first touch, notifiers run before pages go, a discarded
// range reads zero again, and an unmapped one faults with EFAULT.
func TestSpace(t *testing.T) {
	mem, err := hostmem.New(hostmem.Config{Bytes: 64 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	free0 := mem.FreePages()
	s, err := New(mem, "vmm")
	if err != nil {
		t.Fatal(err)
	}
	n := &recNotifier{}
	s.Register(n)
	if _, err := s.Mmap(100); !errors.Is(err, errno.EINVAL) {
		t.Errorf("unaligned mmap: %v", err)
	}
	hva, err := s.Mmap(4 << 20)
	if err != nil || hva%(2<<20) != 0 {
		t.Fatalf("mmap: %#x %v", hva, err)
	}
	if err := s.Write(nil, hva+4090, []byte("hello world")); err != nil {
		t.Fatal(err)
	}
	if s.Resident() != 2 {
		t.Errorf("a write across a page boundary populated %d pages, want 2", s.Resident())
	}
	p, err := s.GetUserPage(nil, hva+4096, false)
	if err != nil {
		t.Fatal(err)
	}
	if b := mem.Bytes(p); len(b) < 5 || string(b[:5]) != "world" {
		t.Errorf("page 1 holds %q, want the write's tail", b)
	}
	mem.Put(nil, p)
	if err := s.Discard(nil, hva, 8192); err != nil {
		t.Fatal(err)
	}
	if len(n.calls) != 1 || n.calls[0] != [2]uint64{hva, 8192} || s.Resident() != 0 {
		t.Errorf("discard: notifier calls %v, resident %d", n.calls, s.Resident())
	}
	if p, _ := s.GetUserPage(nil, hva, false); mem.Tag(p) != 0 {
		t.Error("a discarded page does not read zero")
	} else {
		mem.Put(nil, p)
	}
	if err := s.Munmap(nil, hva, 4<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetUserPage(nil, hva, false); !errors.Is(err, errno.EFAULT) {
		t.Errorf("touching an unmapped address: %v, want EFAULT", err)
	}
	if err := s.Release(nil); err != nil || mem.FreePages() != free0 {
		t.Errorf("release: %v, %d pages free, want %d", err, mem.FreePages(), free0)
	}
}
