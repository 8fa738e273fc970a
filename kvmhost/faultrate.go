//go:build linux

package kvmhost

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// guest_memfd flags (include/uapi/linux/kvm.h): GUEST_MEMFD_FLAG_MMAP and
// GUEST_MEMFD_FLAG_INIT_SHARED.
const (
	gmemFlagMmap       = 1 << 0
	gmemFlagInitShared = 1 << 1
)

// FaultRate faults in every 4 KiB page of a fresh guest_memfd of size bytes
// on the real kernel and returns how long it took. With mmap support
// (GUEST_MEMFD_FLAG_MMAP | INIT_SHARED) each page is a write through the
// mapping, a kvm_gmem_fault_user_mapping (folio allocated, cleared and
// mapped); otherwise each is a 4 KiB fallocate (kvm_gmem_allocate). how
// says which. The VM is a KVM_X86_DEFAULT_VM: no TD can be built here, so
// this is guest_memfd's part of the private fault path, not TDX's.
func FaultRate(size uint64) (pages int, elapsed time.Duration, how string, err error) {
	k, err := Open()
	if err != nil {
		return 0, 0, "", err
	}
	defer k.Close()
	vm, err := k.CreateVM(0)
	if err != nil {
		return 0, 0, "", fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	defer unix.Close(vm)
	pages = int(size / 4096)
	if g, err := CreateGuestMemfd(vm, CreateGuestMemfdArgs{Size: size, Flags: gmemFlagMmap | gmemFlagInitShared}); err == nil {
		defer unix.Close(g)
		b, err := Mmap(g, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err == nil {
			defer Munmap(b)
			start := time.Now()
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			return pages, time.Since(start), "guest_memfd mmap write fault (kvm_gmem_fault_user_mapping)", nil
		}
	}
	g, err := CreateGuestMemfd(vm, CreateGuestMemfdArgs{Size: size})
	if err != nil {
		return 0, 0, "", fmt.Errorf("KVM_CREATE_GUEST_MEMFD: %w", err)
	}
	defer unix.Close(g)
	start := time.Now()
	for off := int64(0); off < int64(size); off += 4096 {
		if err := Fallocate(g, unix.FALLOC_FL_KEEP_SIZE, off, 4096); err != nil {
			return 0, 0, "", fmt.Errorf("fallocate: %w", err)
		}
	}
	return pages, time.Since(start), "guest_memfd fallocate of 4 KiB (kvm_gmem_allocate)", nil
}
