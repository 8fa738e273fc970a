//go:build linux

package kvmhost

import (
	"testing"
	"unsafe"
)

func TestStructSizes(t *testing.T) {
	if s := unsafe.Sizeof(Region2{}); s != 160 {
		t.Fatalf("Region2 is %d bytes, want 160", s)
	}
	if s := unsafe.Sizeof(Region{}); s != 32 {
		t.Fatalf("Region is %d bytes, want 32", s)
	}
	if s := unsafe.Sizeof(CreateGuestMemfdArgs{}); s != 64 {
		t.Fatalf("CreateGuestMemfdArgs is %d bytes, want 64", s)
	}
	if s := unsafe.Sizeof(MemoryAttributes{}); s != 32 {
		t.Fatalf("MemoryAttributes is %d bytes, want 32", s)
	}
}
