// Package kvmhost is a thin layer over the real /dev/kvm and guest_memfd,
// used to check the gmem and kvm models against the running kernel
// (the behaviour table of its differential tests). It does nothing clever: each function is one system call
// and returns the kernel's errno unchanged (as a unix.Errno).
//
// Only the calls the differential test needs are here: create a VM and a
// guest_memfd, fallocate, ftruncate, read/write, lseek, fsync, fstat, mmap
// and a touch that survives SIGBUS, KVM_SET_USER_MEMORY_REGION(2),
// KVM_SET_MEMORY_ATTRIBUTES and KVM_CHECK_EXTENSION.
//
// FaultRate times the real kernel faulting in a guest_memfd, for tdxsim
// bench. On systems other than Linux only Available and FaultRate exist,
// and both report that there is no /dev/kvm.
package kvmhost
