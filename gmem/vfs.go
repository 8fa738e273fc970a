package gmem

import (
	"github.com/tdxsim/tdxsim/errno"
)

func (f *File) badf(op string) error { return f.fd.Check(op, "guest_memfd") }

// Fstat returns the file's status. Kernel: the anon inode's getattr.
func (f *File) Fstat() (Stat, error) {
	if err := f.badf("fstat"); err != nil {
		return Stat{}, err
	}
	return Stat{Size: int64(f.size), Blocks: 0, Blksize: PageSize, Mode: 0o100600}, nil
}

// Read models read(2): guest_memfd has no read op (EINVAL, as the real kernel answers in kvmhost's differential tests).
func (f *File) Read(n int) error { return f.vfs("read", errno.EINVAL, "guest_memfd has no read") }

// Write models write(2): no write op (EINVAL).
func (f *File) Write(n int) error { return f.vfs("write", errno.EINVAL, "guest_memfd has no write") }

// Pread models pread(2): the file is not positional (ESPIPE).
func (f *File) Pread(n int, off int64) error {
	return f.vfs("pread", errno.ESPIPE, "guest_memfd is not seekable")
}

// Pwrite models pwrite(2): ESPIPE.
func (f *File) Pwrite(n int, off int64) error {
	return f.vfs("pwrite", errno.ESPIPE, "guest_memfd is not seekable")
}

// Lseek models lseek(2): ESPIPE for every whence.
func (f *File) Lseek(off int64, whence int) error {
	return f.vfs("lseek", errno.ESPIPE, "guest_memfd is not seekable")
}

// Fsync models fsync/fdatasync(2): no fsync op (EINVAL).
func (f *File) Fsync() error { return f.vfs("fsync", errno.EINVAL, "guest_memfd has no fsync") }

// Ftruncate models ftruncate(2): kvm_gmem_setattr refuses every change
// (EINVAL), even to the same size.
func (f *File) Ftruncate(size int64) error {
	return f.vfs("ftruncate", errno.EINVAL, "guest_memfd size is fixed at creation")
}

func (f *File) vfs(op string, e errno.Errno, rule string) error {
	if err := f.badf(op); err != nil {
		return err
	}
	return errno.New(op, e, rule)
}
