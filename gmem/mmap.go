package gmem

import (
	"fmt"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/internal/rangemap"
	"github.com/tdxsim/tdxsim/sched"
)

// Protection bits and the sharing mode of mmap(2).
const (
	ProtRead  = 0x1
	ProtWrite = 0x2
	ProtExec  = 0x4
)

// Mapping is a userspace mmap of a guest_memfd (a VMA with kvm_gmem_vm_ops).
// It holds a reference on the file, so the file outlives its fd while
// mapped. Pages it touched are mapped in the process page table and hold a
// folio reference each, until the mapping or the page goes.
type Mapping struct {
	f      *File
	pgoff  uint64 // file index of the first byte
	length uint64
	prot   int
	gone   bool
	mapped rangemap.Map // file indexes present in the process page table
}

// ErrSIGBUS is what a touch of a mapping gets where the kernel raises SIGBUS.
var ErrSIGBUS = fmt.Errorf("SIGBUS")

// Mmap maps length bytes of the file at offset. Kernel: do_mmap() then
// kvm_gmem_mmap(). Errors in the kernel's order: length 0 or offset not page
// aligned (EINVAL); PROT_EXEC, because the guest_memfd mount is noexec
// (EPERM, as the real kernel answers in kvmhost's differential tests); a file created without FlagMMAP (ENODEV); a
// private (copy-on-write) mapping (EINVAL). Mapping past EOF is allowed; a
// touch there gets SIGBUS.
func (f *File) Mmap(t *sched.Thread, offset, length uint64, prot int, shared bool) (*Mapping, error) {
	const op = "mmap"
	if err := f.badf(op); err != nil {
		return nil, err
	}
	if length == 0 || offset%PageSize != 0 {
		return nil, errno.Newf(op, errno.EINVAL, "length %#x must be non-zero and offset %#x page aligned", length, offset)
	}
	if prot&ProtExec != 0 {
		return nil, errno.New(op, errno.EPERM, "guest_memfd is on a noexec mount")
	}
	if f.flags&FlagMMAP == 0 {
		return nil, errno.New(op, errno.ENODEV, "guest_memfd created without GUEST_MEMFD_FLAG_MMAP")
	}
	if !shared {
		return nil, errno.New(op, errno.EINVAL, "guest_memfd mappings must be MAP_SHARED")
	}
	f.refs++
	m := &Mapping{f: f, pgoff: offset >> pageShift, length: length, prot: prot}
	f.maps = append(f.maps, m)
	return m, nil
}

// Mprotect changes the mapping's protection: PROT_EXEC is refused (EACCES:
// the mount is noexec).
func (m *Mapping) Mprotect(prot int) error {
	if m.gone {
		return errno.New("mprotect", errno.EINVAL, "mapping is gone")
	}
	if prot&ProtExec != 0 {
		return errno.New("mprotect", errno.EACCES, "guest_memfd is on a noexec mount")
	}
	m.prot = prot
	return nil
}

// Munmap removes the mapping and drops its file reference; the last
// reference releases the file.
func (m *Mapping) Munmap(t *sched.Thread) {
	if m.gone {
		return
	}
	m.dropPages(t, 0, ^uint64(0))
	m.gone = true
	for i, x := range m.f.maps {
		if x == m {
			m.f.maps = append(m.f.maps[:i], m.f.maps[i+1:]...)
			break
		}
	}
	m.f.put(t)
}

// dropPages unmaps file indexes [start, end) from the process page table,
// dropping the page references.
func (m *Mapping) dropPages(t *sched.Thread, start, end uint64) {
	m.f.pc.Lock()
	defer m.f.pc.Unlock()
	m.mapped.Each(start, end, func(s, e, v uint64) {
		if v == 0 {
			return
		}
		for i := s; i < e; i++ {
			if c := m.f.chunks.get(i >> 9); c != nil && c.present.get(i&511) {
				_ = m.f.mem.Put(t, c.pfn(i&511))
			}
		}
	})
	m.mapped.Set(start, end, 0)
}

// unmapUser is unmap_mapping_pages over file indexes [start, end) for
// every mapping of the file.
func (f *File) unmapUser(t *sched.Thread, start, end uint64) {
	for _, m := range f.maps {
		m.dropPages(t, start, end)
	}
}

// fault is kvm_gmem_fault_user_mapping: past EOF or on a private index
// (including every index of a file created without INIT_SHARED) it is
// SIGBUS; otherwise the folio is found or created, cleared if not up to
// date, and mapped.
func (m *Mapping) fault(t *sched.Thread, off uint64, write bool) (addr.PFN, error) {
	if m.gone || off >= m.length {
		return 0, fmt.Errorf("address outside the mapping: %w", ErrSIGBUS)
	}
	if write && m.prot&ProtWrite == 0 || !write && m.prot&ProtRead == 0 {
		return 0, fmt.Errorf("protection: SIGSEGV")
	}
	f := m.f
	index := m.pgoff + off>>pageShift
	if index >= f.size>>pageShift {
		return 0, fmt.Errorf("index %#x past EOF: %w", index, ErrSIGBUS)
	}
	f.pc.Lock()
	if m.mapped.Get(index) != 0 {
		pfn := f.chunks.get(index >> 9).pfn(index & 511)
		f.pc.Unlock()
		return pfn, nil
	}
	f.pc.Unlock()
	f.invalidate.RLock(t)
	defer f.invalidate.RUnlock(t)
	f.pc.Lock()
	defer f.pc.Unlock()
	if f.attrs.Get(index) == AttrPrivate {
		return 0, fmt.Errorf("index %#x is private: %w", index, ErrSIGBUS)
	}
	pfn, err := f.getFolio(t, index)
	if err != nil {
		return 0, fmt.Errorf("index %#x: %v: %w", index, err, ErrSIGBUS)
	}
	c := f.chunks.get(index >> 9)
	if c.order != 0 {
		// Large folios are never mapped to userspace (WARN + SIGBUS).
		return 0, fmt.Errorf("index %#x is in a large folio: %w", index, ErrSIGBUS)
	}
	if !c.uptodate.get(index & 511) {
		if err := f.mem.SetTag(t, pfn, 0); err != nil {
			return 0, err
		}
		c.uptodate.set(index & 511)
	}
	if err := f.mem.Get(pfn); err != nil {
		return 0, err
	}
	m.mapped.Set(index, index+1, 1)
	return pfn, nil
}

// Load reads the byte at off in the mapping, or fails with ErrSIGBUS.
func (m *Mapping) Load(t *sched.Thread, off uint64) (byte, error) {
	pfn, err := m.fault(t, off, false)
	if err != nil {
		return 0, err
	}
	if b := m.f.mem.Bytes(pfn); b != nil {
		return b[off&(PageSize-1)], nil
	}
	return 0, nil
}

// Store writes the byte at off in the mapping, or fails with ErrSIGBUS.
func (m *Mapping) Store(t *sched.Thread, off uint64, v byte) error {
	pfn, err := m.fault(t, off, true)
	if err != nil {
		return err
	}
	page := make([]byte, PageSize)
	copy(page, m.f.mem.Bytes(pfn))
	page[off&(PageSize-1)] = v
	m.f.version++
	return m.f.mem.WriteBytes(t, pfn, page, hostmem.MakeTag(0, m.f.version))
}

// madvise advice values (include/uapi/asm-generic/mman-common.h).
const (
	MadvDontneed      = 4
	MadvRemove        = 9
	MadvHugepage      = 14
	MadvPopulateWrite = 23
	MadvCollapse      = 25
)

// Madvise applies advice to [off, off+length) of the mapping. Kernel:
// madvise(2) on a guest_memfd VMA: DONTNEED drops the page-table entries
// (the file keeps the pages); REMOVE punches the hole in the file;
// HUGEPAGE is accepted and changes nothing (folios are 4 KiB);
// POPULATE_WRITE write-faults every page (SIGBUS there is EFAULT);
// COLLAPSE is refused (EINVAL: guest_memfd folios are not collapsible,
// guest_memfd_test.c); other advice is EINVAL.
func (m *Mapping) Madvise(t *sched.Thread, off, length uint64, advice int) error {
	const op = "madvise"
	if m.gone {
		return errno.New(op, errno.ENOMEM, "range is not mapped")
	}
	if off%PageSize != 0 || off+length > (m.length+PageSize-1)&^(PageSize-1) {
		return errno.New(op, errno.EINVAL, "range must be page aligned and inside the mapping")
	}
	start := m.pgoff + off>>pageShift
	end := m.pgoff + (off+length+PageSize-1)>>pageShift
	switch advice {
	case MadvDontneed:
		m.dropPages(t, start, end)
	case MadvRemove:
		if m.prot&ProtWrite == 0 {
			return errno.New(op, errno.EACCES, "MADV_REMOVE needs a writable shared mapping")
		}
		return m.f.Fallocate(t, FallocPunchHole|FallocKeepSize, int64(start<<pageShift), int64((end-start)<<pageShift))
	case MadvHugepage:
	case MadvPopulateWrite:
		for o := off &^ (PageSize - 1); o < off+length; o += PageSize {
			if _, err := m.fault(t, o, true); err != nil {
				return errno.Wrapf(op, errno.EFAULT, err, "populating offset %#x", o)
			}
		}
	case MadvCollapse:
		return errno.New(op, errno.EINVAL, "guest_memfd folios cannot be collapsed")
	default:
		return errno.Newf(op, errno.EINVAL, "advice %d is not modelled", advice)
	}
	return nil
}
