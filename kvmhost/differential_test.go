//go:build linux

package kvmhost

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/sched"
)

// The differential harness runs one operation sequence against two sides,
// the real kernel and the model, and compares each step's result. Handles
// (VMs, guest_memfds, mappings) are indexes into per-side tables, so the
// same script drives both.

// result is one step's outcome: a value (a handle index, a byte, a cap),
// the errno, and a note for values compared as text (fstat fields).
type result struct {
	Ret   int64
	Errno errno.Errno
	Note  string
}

func (r result) String() string {
	s := fmt.Sprintf("ret=%d", r.Ret)
	if r.Errno != 0 {
		s += " " + r.Errno.String()
	}
	if r.Note != "" {
		s += " " + r.Note
	}
	return s
}

// fdKind says what the guest_memfd field of a memory region refers to.
type fdKind int

const (
	fdGmem    fdKind = iota // a guest_memfd handle (h)
	fdVM                    // a VM fd (h): open, but not a guest_memfd
	fdDevNull               // /dev/null
	fdMemfd                 // a memfd_create file
	fdBad                   // 9999: not open
	fdNeg                   // -1 (0xffffffff)
)

type fdRef struct {
	kind fdKind
	h    int
}

type region struct {
	slot, flags         uint32
	gpa, size, ua, goff uint64
	fd                  fdRef
	pad1                uint32
	pad2                uint64 // written to pad2[13]
}

type gmemArgs struct {
	size, flags, res0, res5 uint64
}

// side is one implementation under test.
type side interface {
	createVM(typ uint64) result
	closeVM(vm int) result
	checkExt(vm int, capability int) result // vm -1: /dev/kvm
	createGmem(vm int, a gmemArgs) result   // vm -1: on /dev/kvm
	closeGmem(g int) result
	fallocate(g int, mode uint32, off, length int64) result
	ftruncate(g int, size int64) result
	file(g int) vfsFile
	mmap(g int, off, length uint64, prot int, shared bool) result
	munmap(m int) result
	load(m int, off uint64) result
	store(m int, off uint64, v byte) result
	madvise(m int, off, length uint64, advice int) result
	mprotect(m int, prot int) result
	region2(vm int, r region) result
	region1(vm int, r region) result
	attributes(vm int, a kvm.MemoryAttributes) result
	cleanup()
}

// vfsFile is a guest_memfd's file operations as a side reaches them: a
// *gmem.File in the model, a realFD on the host.
type vfsFile interface {
	Fstat() (gmem.Stat, error)
	Read(n int) error
	Write(n int) error
	Pread(n int, off int64) error
	Pwrite(n int, off int64) error
	Lseek(off int64, whence int) error
	Fsync() error
}

// fstat compares the fields the two sides must agree on as text.
func fstat(f vfsFile) result {
	st, err := f.Fstat()
	if err != nil {
		return errResult(err)
	}
	return result{Note: fmt.Sprintf("size=%d blocks=%d blksize=%d", st.Size, st.Blocks, st.Blksize)}
}

// fileop is one of the file operations guest_memfd refuses or ignores.
func fileop(f vfsFile, op string) result {
	switch op {
	case "read":
		return errResult(f.Read(4096))
	case "write":
		return errResult(f.Write(4096))
	case "pread":
		return errResult(f.Pread(4096, 0))
	case "pwrite":
		return errResult(f.Pwrite(4096, 0))
	case "lseek":
		return errResult(f.Lseek(4096, unix.SEEK_SET))
	case "fsync":
		return errResult(f.Fsync())
	}
	panic(op)
}

func errResult(err error) result {
	if err == nil {
		return result{}
	}
	var ue unix.Errno
	if errors.As(err, &ue) {
		return result{Ret: -1, Errno: errno.Errno(ue)}
	}
	return result{Ret: -1, Errno: errno.Of(err)}
}

// ---- the real kernel ----

type realSide struct {
	kvm     *KVM
	vms     []int
	gmems   []int
	maps    [][]byte
	devNull int
	memfd   int
}

func newRealSide() (*realSide, error) {
	k, err := Open()
	if err != nil {
		return nil, err
	}
	dn, err := OpenDevNull()
	if err != nil {
		return nil, err
	}
	mf, err := unix.MemfdCreate("tdxsim-diff", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return &realSide{kvm: k, devNull: dn, memfd: mf}, nil
}

func (r *realSide) createVM(typ uint64) result {
	fd, err := r.kvm.CreateVM(typ)
	if err != nil {
		return errResult(err)
	}
	r.vms = append(r.vms, fd)
	return result{Ret: int64(len(r.vms) - 1)}
}

func (r *realSide) closeVM(vm int) result { return errResult(Close(r.vms[vm])) }

func (r *realSide) checkExt(vm int, c int) result {
	fd := r.kvm.FD()
	if vm >= 0 {
		fd = r.vms[vm]
	}
	v, err := CheckExtension(fd, c)
	if err != nil {
		return errResult(err)
	}
	return result{Ret: int64(v)}
}

func (r *realSide) createGmem(vm int, a gmemArgs) result {
	fd := r.kvm.FD()
	if vm >= 0 {
		fd = r.vms[vm]
	}
	args := CreateGuestMemfdArgs{Size: a.size, Flags: a.flags}
	args.Reserved[0], args.Reserved[5] = a.res0, a.res5
	g, err := CreateGuestMemfd(fd, args)
	if err != nil {
		return errResult(err)
	}
	r.gmems = append(r.gmems, g)
	return result{Ret: int64(len(r.gmems) - 1)}
}

func (r *realSide) closeGmem(g int) result { return errResult(Close(r.gmems[g])) }

func (r *realSide) fallocate(g int, mode uint32, off, length int64) result {
	return errResult(Fallocate(r.gmems[g], mode, off, length))
}

func (r *realSide) ftruncate(g int, size int64) result {
	return errResult(Ftruncate(r.gmems[g], size))
}

func (r *realSide) file(g int) vfsFile { return realFD(r.gmems[g]) }

// realFD is a real guest_memfd's descriptor with the model's file methods.
type realFD int

func (fd realFD) Fstat() (gmem.Stat, error) {
	st, err := Fstat(int(fd))
	return gmem.Stat{Size: st.Size, Blocks: st.Blocks, Blksize: int64(st.Blksize), Mode: st.Mode}, err
}
func (fd realFD) Read(n int) error                  { return Read(int(fd), n) }
func (fd realFD) Write(n int) error                 { return Write(int(fd), n) }
func (fd realFD) Pread(n int, off int64) error      { return Pread(int(fd), n, off) }
func (fd realFD) Pwrite(n int, off int64) error     { return Pwrite(int(fd), n, off) }
func (fd realFD) Lseek(off int64, whence int) error { return Lseek(int(fd), off, whence) }
func (fd realFD) Fsync() error                      { return Fsync(int(fd)) }

func (r *realSide) mmap(g int, off, length uint64, prot int, shared bool) result {
	flags := unix.MAP_PRIVATE
	if shared {
		flags = unix.MAP_SHARED
	}
	b, err := Mmap(r.gmems[g], int64(off), int(length), prot, flags)
	if err != nil {
		return errResult(err)
	}
	r.maps = append(r.maps, b)
	return result{Ret: int64(len(r.maps) - 1)}
}

func (r *realSide) munmap(m int) result {
	err := Munmap(r.maps[m])
	r.maps[m] = nil
	return errResult(err)
}

func (r *realSide) load(m int, off uint64) result {
	v, err := Load(r.maps[m], int(off))
	if err != nil {
		return result{Ret: -1, Note: "SIGBUS"}
	}
	return result{Ret: int64(v)}
}

func (r *realSide) store(m int, off uint64, v byte) result {
	if err := Store(r.maps[m], int(off), v); err != nil {
		return result{Ret: -1, Note: "SIGBUS"}
	}
	return result{}
}

func (r *realSide) madvise(m int, off, length uint64, advice int) result {
	return errResult(unix.Madvise(r.maps[m][off:off+length], advice))
}

func (r *realSide) mprotect(m int, prot int) result {
	return errResult(unix.Mprotect(r.maps[m], prot))
}

func (r *realSide) fdNumber(f fdRef) uint32 {
	switch f.kind {
	case fdGmem:
		return uint32(r.gmems[f.h])
	case fdVM:
		return uint32(r.vms[f.h])
	case fdDevNull:
		return uint32(r.devNull)
	case fdMemfd:
		return uint32(r.memfd)
	case fdBad:
		return 9999
	}
	return 0xffffffff
}

func (r *realSide) region2(vm int, x region) result {
	rg := Region2{Slot: x.slot, Flags: x.flags, GuestPhysAddr: x.gpa, MemorySize: x.size,
		UserspaceAddr: x.ua, GuestMemfdOffset: x.goff, GuestMemfd: r.fdNumber(x.fd), Pad1: x.pad1}
	rg.Pad2[13] = x.pad2
	return errResult(SetUserMemoryRegion2(r.vms[vm], rg))
}

func (r *realSide) region1(vm int, x region) result {
	return errResult(SetUserMemoryRegion(r.vms[vm], Region{Slot: x.slot, Flags: x.flags,
		GuestPhysAddr: x.gpa, MemorySize: x.size, UserspaceAddr: x.ua}))
}

func (r *realSide) attributes(vm int, a kvm.MemoryAttributes) result {
	return errResult(SetMemoryAttributes(r.vms[vm], MemoryAttributes{a.Address, a.Size, a.Attributes, a.Flags}))
}

func (r *realSide) cleanup() {
	for _, b := range r.maps {
		if b != nil {
			Munmap(b)
		}
	}
	// Closing an fd twice is harmless here: the numbers are ours, and a
	// failed close is ignored.
	for _, fd := range r.gmems {
		unix.Close(fd)
	}
	for _, fd := range r.vms {
		unix.Close(fd)
	}
	unix.Close(r.devNull)
	unix.Close(r.memfd)
	r.kvm.Close()
}

// ---- the model ----

type modelSide struct {
	t     *sched.Thread
	sys   *kvm.System
	vms   []*kvm.VM
	gmems []*gmem.File
	maps  []*gmem.Mapping
}

func (m *modelSide) createVM(typ uint64) result {
	vm, err := m.sys.CreateVM(m.t, kvm.VMType(typ)) // scripts use types 0..15
	if err != nil {
		return errResult(err)
	}
	m.vms = append(m.vms, vm)
	return result{Ret: int64(len(m.vms) - 1)}
}

func (m *modelSide) closeVM(vm int) result { return errResult(m.vms[vm].Close(m.t)) }

func (m *modelSide) checkExt(vm int, c int) result {
	if vm < 0 {
		return result{Ret: int64(m.sys.CheckExtension(c))}
	}
	v, err := m.vms[vm].CheckExtension(c)
	if err != nil {
		return errResult(err)
	}
	return result{Ret: int64(v)}
}

func (m *modelSide) createGmem(vm int, a gmemArgs) result {
	args := gmem.CreateArgs{Size: a.size, Flags: a.flags}
	args.Reserved[0], args.Reserved[5] = a.res0, a.res5
	var f *gmem.File
	var err error
	if vm < 0 {
		f, err = m.sys.CreateGuestMemfd(m.t, args)
	} else {
		f, err = m.vms[vm].CreateGuestMemfd(m.t, args)
	}
	if err != nil {
		return errResult(err)
	}
	m.gmems = append(m.gmems, f)
	return result{Ret: int64(len(m.gmems) - 1)}
}

func (m *modelSide) closeGmem(g int) result { return errResult(m.gmems[g].Close(m.t)) }

func (m *modelSide) fallocate(g int, mode uint32, off, length int64) result {
	return errResult(m.gmems[g].Fallocate(m.t, mode, off, length))
}

func (m *modelSide) ftruncate(g int, size int64) result {
	return errResult(m.gmems[g].Ftruncate(size))
}

func (m *modelSide) file(g int) vfsFile { return m.gmems[g] }

func (m *modelSide) mmap(g int, off, length uint64, prot int, shared bool) result {
	mp, err := m.gmems[g].Mmap(m.t, off, length, prot, shared)
	if err != nil {
		return errResult(err)
	}
	m.maps = append(m.maps, mp)
	return result{Ret: int64(len(m.maps) - 1)}
}

func (m *modelSide) munmap(i int) result {
	m.maps[i].Munmap(m.t)
	return result{}
}

func (m *modelSide) load(i int, off uint64) result {
	v, err := m.maps[i].Load(m.t, off)
	if err != nil {
		return result{Ret: -1, Note: "SIGBUS"}
	}
	return result{Ret: int64(v)}
}

func (m *modelSide) store(i int, off uint64, v byte) result {
	if err := m.maps[i].Store(m.t, off, v); err != nil {
		return result{Ret: -1, Note: "SIGBUS"}
	}
	return result{}
}

func (m *modelSide) madvise(i int, off, length uint64, advice int) result {
	return errResult(m.maps[i].Madvise(m.t, off, length, advice))
}

func (m *modelSide) mprotect(i int, prot int) result {
	return errResult(m.maps[i].Mprotect(prot))
}

func (m *modelSide) fd(f fdRef) kvm.FD {
	switch f.kind {
	case fdGmem:
		return kvm.FD{File: m.gmems[f.h]}
	case fdVM:
		if m.vms[f.h].Closed() {
			return kvm.FD{}
		}
		return kvm.FD{Other: "a KVM VM fd"}
	case fdDevNull:
		return kvm.FD{Other: "/dev/null"}
	case fdMemfd:
		return kvm.FD{Other: "a memfd"}
	}
	return kvm.FD{}
}

func (m *modelSide) toRegion(x region) kvm.Region {
	r := kvm.Region{Slot: x.slot, Flags: x.flags, GuestPhysAddr: x.gpa, MemorySize: x.size,
		UserspaceAddr: x.ua, GuestMemfdOffset: x.goff, GuestMemfd: m.fd(x.fd), Pad1: x.pad1}
	r.Pad2[13] = x.pad2
	return r
}

func (m *modelSide) region2(vm int, x region) result {
	return errResult(m.vms[vm].SetUserMemoryRegion2(m.t, m.toRegion(x)))
}

func (m *modelSide) region1(vm int, x region) result {
	return errResult(m.vms[vm].SetUserMemoryRegion(m.t, m.toRegion(x)))
}

func (m *modelSide) attributes(vm int, a kvm.MemoryAttributes) result {
	return errResult(m.vms[vm].SetMemoryAttributes(m.t, a))
}

func (m *modelSide) cleanup() {
	for _, mp := range m.maps {
		mp.Munmap(m.t)
	}
	for _, f := range m.gmems {
		if !f.Closed() {
			f.Close(m.t)
		}
	}
	for _, vm := range m.vms {
		if !vm.Closed() {
			vm.Close(m.t)
		}
	}
}
