// Package usermem models the VMM process's anonymous memory as KVM sees it
// (struct mm_struct): mappings made with mmap, pages populated on first
// touch and charged to the process, and MMU-notifier callbacks
// (invalidate_range_start) before munmap or MADV_DONTNEED takes pages away,
// which is how KVM learns to zap shared mappings. It backs the shared half
// of a TD's memory and the source pages of KVM_TDX_INIT_MEM_REGION.
//
// Pages are kept in per-2 MiB records of 512 PFNs, never one Go object
// per page.
package usermem

import (
	"fmt"
	"sort"
	"sync"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/sched"
)

// Notifier is an MMU-notifier subscriber (KVM's kvm_mmu_notifier_ops).
type Notifier interface {
	// MMUNotifierInvalidate is invalidate_range_start+end over [hva, hva+size).
	MMUNotifierInvalidate(t *sched.Thread, hva, size uint64)
}

type vma struct{ start, end uint64 }

// Space is one process's address space.
type Space struct {
	mu        sync.Mutex // mmap_lock and the page-table lock, in one
	mem       *hostmem.Memory
	acct      hostmem.Account
	vmas      []vma                     // sorted, disjoint
	chunks    map[uint64]*[512]addr.PFN // hva >> 21 -> pfn+1 per page (0 = none)
	resident  uint64
	notifiers []Notifier
	next      uint64
}

// base is the mmap base: mappings go below it, top down (a typical
// mmap_base, 2 MiB aligned). mmapFloor is the lowest address handed out
// (TASK_UNMAPPED_BASE-like: above the program and its heap).
const (
	base      = 0x7f0000000000
	mmapFloor = 0x10000000000
)

// New creates an empty address space charged to a new account called name.
func New(mem *hostmem.Memory, name string) (*Space, error) {
	acct, err := mem.NewAccount(name)
	if err != nil {
		return nil, err
	}
	return &Space{mem: mem, acct: acct, chunks: map[uint64]*[512]addr.PFN{}, next: base}, nil
}

// Account returns the process's account.
func (s *Space) Account() hostmem.Account { return s.acct }

// Resident returns the number of populated pages (RSS).
func (s *Space) Resident() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resident
}

// Register subscribes n to invalidations (mmu_notifier_register).
func (s *Space) Register(n Notifier) {
	s.mu.Lock()
	s.notifiers = append(s.notifiers, n)
	s.mu.Unlock()
}

// Mmap maps size bytes of anonymous memory (MAP_PRIVATE|MAP_ANONYMOUS)
// at a 2 MiB-aligned address it picks, and returns that address. Errors:
// size zero or not page aligned (EINVAL); no room left (ENOMEM).
func (s *Space) Mmap(size uint64) (uint64, error) {
	if size == 0 || size%addr.PageSize != 0 {
		return 0, errno.Newf("mmap", errno.EINVAL, "length %#x: zero or not page aligned", size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Top down from the mmap base, as the kernel's default layout does
	// (so a 1 TiB guest's memory fits below TASK_SIZE). Like the THP-aware
	// get_unmapped_area, a mapping starts on a 2 MiB boundary, and a large
	// one on a 1 GiB boundary, so that a memslot over it can be mapped
	// huge (the GFN and the address must agree in alignment).
	align := uint64(addr.Size2M)
	if size >= addr.Size1G {
		align = addr.Size1G
	}
	span := (size + addr.Size2M - 1) &^ (addr.Size2M - 1)
	if span > s.next-mmapFloor {
		return 0, errno.Newf("mmap", errno.ENOMEM, "length %#x: no room left in the address space", size)
	}
	hva := (s.next - span) &^ (align - 1)
	if hva < mmapFloor {
		return 0, errno.Newf("mmap", errno.ENOMEM, "length %#x: no room left in the address space", size)
	}
	s.next = hva
	s.vmas = append(s.vmas, vma{hva, hva + size})
	sort.Slice(s.vmas, func(i, j int) bool { return s.vmas[i].start < s.vmas[j].start })
	return hva, nil
}

func (s *Space) mapped(hva uint64) bool {
	i := sort.Search(len(s.vmas), func(i int) bool { return s.vmas[i].end > hva })
	return i < len(s.vmas) && s.vmas[i].start <= hva
}

// GetUserPage returns the page at hva with a reference the caller drops
// with hostmem's Put, allocating a zeroed page on first touch (GUP with
// FOLL_WRITE, hva_to_pfn). Errors: no mapping there (EFAULT), no memory
// (ENOMEM).
func (s *Space) GetUserPage(t *sched.Thread, hva uint64, write bool) (addr.PFN, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.pageLocked(t, hva)
	if err != nil {
		return 0, err
	}
	if err := s.mem.Get(p); err != nil {
		return 0, err
	}
	return p, nil
}

func (s *Space) pageLocked(t *sched.Thread, hva uint64) (addr.PFN, error) {
	if !s.mapped(hva) {
		return 0, errno.Newf("get_user_pages", errno.EFAULT, "hva %#x is not mapped", hva)
	}
	c := s.chunks[hva>>21]
	if c == nil {
		c = new([512]addr.PFN)
		s.chunks[hva>>21] = c
	}
	i := (hva >> addr.PageShift) & 511
	if c[i] != 0 {
		return c[i] - 1, nil
	}
	p, err := s.mem.Alloc(t, hostmem.Request{Source: hostmem.SourceBuddy, Account: s.acct, Charged: true})
	if err != nil {
		return 0, errno.Wrap("handle_mm_fault", errno.ENOMEM, err)
	}
	c[i] = p + 1
	s.resident++
	return p, nil
}

// Write copies data to [hva, hva+len(data)) as the process would, page by
// page, populating pages; each page gets a content tag naming it. Errors:
// EFAULT outside a mapping.
func (s *Space) Write(t *sched.Thread, hva uint64, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for off := uint64(0); off < uint64(len(data)); {
		page := (hva + off) &^ (addr.PageSize - 1)
		in := (hva + off) - page
		n := min(addr.PageSize-in, uint64(len(data))-off)
		p, err := s.pageLocked(t, page)
		if err != nil {
			return err
		}
		buf := append([]byte(nil), s.mem.Bytes(p)...)
		if len(buf) < addr.PageSize {
			buf = append(buf, make([]byte, addr.PageSize-len(buf))...)
		}
		copy(buf[in:], data[off:off+n])
		if err := s.mem.WriteBytes(t, p, buf, hostmem.MakeTag(uint16(s.acct), page>>addr.PageShift)); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// Discard is madvise(MADV_DONTNEED) over [hva, hva+size): the notifiers
// run first, then the pages go back to the host; the range stays mapped
// and reads zero on the next touch. QEMU discards the shared backing of a
// range the guest converts to private (ram_block_discard_range).
func (s *Space) Discard(t *sched.Thread, hva, size uint64) error {
	if hva%addr.PageSize != 0 {
		return errno.Newf("madvise", errno.EINVAL, "hva %#x not page aligned", hva)
	}
	s.notify(t, hva, size)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropLocked(t, hva, (hva+size+addr.PageSize-1)&^(addr.PageSize-1))
}

// Munmap unmaps [hva, hva+size): notifiers, then the pages are freed and
// the range is no longer mapped.
func (s *Space) Munmap(t *sched.Thread, hva, size uint64) error {
	if hva%addr.PageSize != 0 || size == 0 {
		return errno.Newf("munmap", errno.EINVAL, "hva %#x size %#x", hva, size)
	}
	end := (hva + size + addr.PageSize - 1) &^ (addr.PageSize - 1)
	s.notify(t, hva, end-hva)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.dropLocked(t, hva, end); err != nil {
		return err
	}
	var keep []vma
	for _, v := range s.vmas {
		if v.end <= hva || v.start >= end {
			keep = append(keep, v)
			continue
		}
		if v.start < hva {
			keep = append(keep, vma{v.start, hva})
		}
		if v.end > end {
			keep = append(keep, vma{end, v.end})
		}
	}
	s.vmas = keep
	return nil
}

// Release is process exit: every mapping goes.
func (s *Space) Release(t *sched.Thread) error {
	s.mu.Lock()
	vmas := append([]vma(nil), s.vmas...)
	s.mu.Unlock()
	for _, v := range vmas {
		if err := s.Munmap(t, v.start, v.end-v.start); err != nil {
			return err
		}
	}
	return nil
}

func (s *Space) notify(t *sched.Thread, hva, size uint64) {
	s.mu.Lock()
	ns := append([]Notifier(nil), s.notifiers...)
	s.mu.Unlock()
	for _, n := range ns {
		n.MMUNotifierInvalidate(t, hva, size)
	}
}

func (s *Space) dropLocked(t *sched.Thread, start, end uint64) error {
	for hva := start; hva < end; {
		key := hva >> 21
		c := s.chunks[key]
		chunkEnd := min(end, (key+1)<<21)
		if c != nil {
			for a := hva; a < chunkEnd; a += addr.PageSize {
				i := (a >> addr.PageShift) & 511
				if c[i] == 0 {
					continue
				}
				if err := s.mem.Free(t, c[i]-1, hostmem.SourceBuddy); err != nil {
					return fmt.Errorf("usermem: freeing the page at %#x: %w", a, err)
				}
				c[i] = 0
				s.resident--
			}
			if *c == ([512]addr.PFN{}) {
				delete(s.chunks, key)
			}
		}
		hva = chunkEnd
	}
	return nil
}
