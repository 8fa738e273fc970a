//go:build linux

package kvmhost

import (
	"errors"
	"fmt"
	"runtime/debug"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl numbers (include/uapi/linux/kvm.h; sizes checked in the tests).
const (
	kvmCreateVM             = 0xAE01
	kvmCheckExtension       = 0xAE03
	kvmSetUserMemoryRegion  = 0x4020AE46 // _IOW(KVMIO, 0x46, 32 bytes)
	kvmSetUserMemoryRegion2 = 0x40A0AE49 // _IOW(KVMIO, 0x49, 160 bytes)
	kvmSetMemoryAttributes  = 0x4020AED2 // _IOW(KVMIO, 0xd2, 32 bytes)
	kvmCreateGuestMemfd     = 0xC040AED4 // _IOWR(KVMIO, 0xd4, 64 bytes)
	devKVM                  = "/dev/kvm"
)

// Available returns nil when /dev/kvm can be opened read-write, else the
// reason.
func Available() error {
	fd, err := unix.Open(devKVM, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", devKVM, err)
	}
	unix.Close(fd)
	return nil
}

// KVM is an open /dev/kvm.
type KVM struct{ fd int }

// Open opens /dev/kvm.
func Open() (*KVM, error) {
	fd, err := unix.Open(devKVM, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", devKVM, err)
	}
	return &KVM{fd: fd}, nil
}

// FD returns the /dev/kvm file descriptor.
func (k *KVM) FD() int { return k.fd }

// Close closes /dev/kvm.
func (k *KVM) Close() error { return unix.Close(k.fd) }

// ioctl issues one ioctl, retrying when a signal interrupted it: the Go
// runtime's preemption signals make KVM_CREATE_VM and friends return EINTR
// now and then, and userspace (QEMU too) simply retries.
func ioctl(fd int, req uintptr, arg uintptr) (int, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(r), nil
	}
}

// CheckExtension is KVM_CHECK_EXTENSION on fd (/dev/kvm or a VM).
func CheckExtension(fd int, capability int) (int, error) {
	return ioctl(fd, kvmCheckExtension, uintptr(capability))
}

// CreateVM is KVM_CREATE_VM; it returns the VM fd.
func (k *KVM) CreateVM(typ uint64) (int, error) {
	return ioctl(k.fd, kvmCreateVM, uintptr(typ))
}

// CreateGuestMemfdArgs is struct kvm_create_guest_memfd.
type CreateGuestMemfdArgs struct {
	Size     uint64
	Flags    uint64
	Reserved [6]uint64
}

// CreateGuestMemfd is KVM_CREATE_GUEST_MEMFD on fd; it returns the new fd.
func CreateGuestMemfd(fd int, a CreateGuestMemfdArgs) (int, error) {
	return ioctl(fd, kvmCreateGuestMemfd, uintptr(unsafe.Pointer(&a)))
}

// Region2 is struct kvm_userspace_memory_region2.
type Region2 struct {
	Slot             uint32
	Flags            uint32
	GuestPhysAddr    uint64
	MemorySize       uint64
	UserspaceAddr    uint64
	GuestMemfdOffset uint64
	GuestMemfd       uint32
	Pad1             uint32
	Pad2             [14]uint64
}

// Region is struct kvm_userspace_memory_region.
type Region struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// SetUserMemoryRegion2 is KVM_SET_USER_MEMORY_REGION2 on a VM fd.
func SetUserMemoryRegion2(vm int, r Region2) error {
	_, err := ioctl(vm, kvmSetUserMemoryRegion2, uintptr(unsafe.Pointer(&r)))
	return err
}

// SetUserMemoryRegion is KVM_SET_USER_MEMORY_REGION on a VM fd.
func SetUserMemoryRegion(vm int, r Region) error {
	_, err := ioctl(vm, kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&r)))
	return err
}

// MemoryAttributes is struct kvm_memory_attributes.
type MemoryAttributes struct {
	Address, Size, Attributes, Flags uint64
}

// SetMemoryAttributes is KVM_SET_MEMORY_ATTRIBUTES on a VM fd.
func SetMemoryAttributes(vm int, a MemoryAttributes) error {
	_, err := ioctl(vm, kvmSetMemoryAttributes, uintptr(unsafe.Pointer(&a)))
	return err
}

// Fallocate is fallocate(2).
// It retries when interrupted by a signal (kvm_gmem_allocate returns EINTR
// when a signal is pending).
func Fallocate(fd int, mode uint32, off, length int64) error {
	for {
		err := unix.Fallocate(fd, mode, off, length)
		if err != unix.EINTR {
			return err
		}
	}
}

// Ftruncate is ftruncate(2).
func Ftruncate(fd int, size int64) error { return unix.Ftruncate(fd, size) }

// Fstat is fstat(2).
func Fstat(fd int) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstat(fd, &st)
	return st, err
}

// Read reads n bytes (read(2)).
func Read(fd, n int) error { _, err := unix.Read(fd, make([]byte, n)); return err }

// Write writes n bytes (write(2)).
func Write(fd, n int) error { _, err := unix.Write(fd, make([]byte, n)); return err }

// Pread is pread(2).
func Pread(fd, n int, off int64) error { _, err := unix.Pread(fd, make([]byte, n), off); return err }

// Pwrite is pwrite(2).
func Pwrite(fd, n int, off int64) error { _, err := unix.Pwrite(fd, make([]byte, n), off); return err }

// Lseek is lseek(2).
func Lseek(fd int, off int64, whence int) error { _, err := unix.Seek(fd, off, whence); return err }

// Fsync is fsync(2).
func Fsync(fd int) error { return unix.Fsync(fd) }

// Close closes fd.
func Close(fd int) error { return unix.Close(fd) }

// Mmap is mmap(2) of fd.
func Mmap(fd int, off int64, length int, prot, flags int) ([]byte, error) {
	return unix.Mmap(fd, off, length, prot, flags)
}

// Munmap is munmap(2).
func Munmap(b []byte) error { return unix.Munmap(b) }

// ErrFault is returned by Load and Store when the access raised SIGBUS or
// SIGSEGV.
var ErrFault = errors.New("memory fault (SIGBUS/SIGSEGV)")

// Load reads b[off]; a SIGBUS (guest_memfd private page or past EOF) comes
// back as ErrFault instead of killing the process.
func Load(b []byte, off int) (v byte, err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrFault, r)
		}
	}()
	return load(b, off), nil
}

// Store writes v to b[off], reporting a SIGBUS as ErrFault.
func Store(b []byte, off int, v byte) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrFault, r)
		}
	}()
	store(b, off, v)
	return nil
}

//go:noinline
func load(b []byte, off int) byte { return b[off] }

//go:noinline
func store(b []byte, off int, v byte) { b[off] = v }

// OpenDevNull opens /dev/null (a file that is not a guest_memfd).
func OpenDevNull() (int, error) {
	return unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
}
