package mmu

import (
	"fmt"
	"sync"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/sched"
)

// Cache is a struct kvm_mmu_memory_cache of pages: topped up with sleeping,
// accounted allocations before mmu_lock is taken, and drawn from under
// mmu_lock, where nothing may sleep. Every page it hands out remembers the
// cache's hostmem source, so a page freed into another pool is caught
// (KVM's page-table pages are never mixed with PAMT pages).
//
// A per-vCPU cache is used by one thread at a time, as in the kernel. A
// per-VM cache (the split caches) is topped up by any vCPU outside
// mmu_lock while another draws from it under mmu_lock, so the page list
// has its own lock, held only around the list update and never across the
// sleeping allocation: tdx_topup_vm_split_cache() and its
// prealloc_split_cache_lock (TDX huge-page series). A sync.Mutex rather than a
// sched lock because nothing inside it yields. A per-vCPU cache
// (NewVCPUCache) takes no lock: the fault path draws from it several times
// per fault, and the kernel's kvm_mmu_memory_cache has none either.
type Cache struct {
	name     string
	mem      *hostmem.Memory
	src      hostmem.Source
	acct     hostmem.Account
	min      int // kvm_mmu_topup_memory_cache(mc, min)
	capacity int // mc->capacity: a top-up fills to here

	// Uncharged makes top-ups allocate without __GFP_ACCOUNT: the pages
	// are the VM's but not charged to its account (the bug of the TDX huge-page series'
	// tdx_topup_vm_split_cache, kept for the tdx_prealloc policy).
	Uncharged bool

	shared bool // a per-VM cache: mu guards pages
	mu     sync.Mutex
	pages  []addr.PFN
	// TopUps counts top-ups that allocated; Allocated and Taken count
	// pages.
	TopUps, Allocated, Taken uint64
}

// NewCache returns an empty cache whose pages are charged to acct and come
// from the hostmem source named name, safe for several threads (a per-VM
// cache).
func NewCache(mem *hostmem.Memory, name string, acct hostmem.Account, min, capacity int) (*Cache, error) {
	return newCache(mem, name, acct, min, capacity, true)
}

// NewVCPUCache is NewCache for a cache one thread uses at a time (a
// vCPU's): it takes no lock.
func NewVCPUCache(mem *hostmem.Memory, name string, acct hostmem.Account, min, capacity int) (*Cache, error) {
	return newCache(mem, name, acct, min, capacity, false)
}

func newCache(mem *hostmem.Memory, name string, acct hostmem.Account, min, capacity int, shared bool) (*Cache, error) {
	src, err := mem.RegisterSource(name)
	if err != nil {
		return nil, err
	}
	return &Cache{name: name, mem: mem, src: src, acct: acct, min: min, capacity: max(capacity, min), shared: shared}, nil
}

func (c *Cache) lock() {
	if c.shared {
		c.mu.Lock()
	}
}

func (c *Cache) unlock() {
	if c.shared {
		c.mu.Unlock()
	}
}

// Len returns the number of pages ready.
func (c *Cache) Len() int {
	c.lock()
	defer c.unlock()
	return len(c.pages)
}

// TopUp fills the cache to capacity when it holds fewer than min pages,
// with GFP_KERNEL_ACCOUNT allocations that may sleep: calling it under
// mmu_lock is a lockdep report. Kernel: kvm_mmu_topup_memory_cache().
// Errors: ENOMEM when the host is out of memory (the pages got so far stay).
func (c *Cache) TopUp(t *sched.Thread) error {
	return c.TopUpTo(t, c.min)
}

// TopUpTo is TopUp with an explicit minimum (__kvm_mmu_topup_memory_cache).
func (c *Cache) TopUpTo(t *sched.Thread, min int) error {
	c.lock()
	if len(c.pages) >= min {
		c.unlock()
		return nil
	}
	c.TopUps++
	c.unlock()
	if t != nil {
		t.Emit(event.Event{Kind: event.KindMMU, Name: "cache_topup", Detail: c.name})
	}
	for {
		c.lock()
		n := len(c.pages)
		c.unlock()
		if n >= max(c.capacity, min) {
			return nil
		}
		p, err := c.mem.Alloc(t, hostmem.Request{Source: c.src, Account: c.acct, Charged: !c.Uncharged})
		c.lock()
		if err != nil {
			n := len(c.pages)
			c.unlock()
			if n >= min {
				return nil
			}
			return errno.Wrapf("kvm_mmu_topup_memory_cache", errno.ENOMEM, err, "%s", c.name)
		}
		c.pages = append(c.pages, p)
		c.Allocated++
		c.unlock()
	}
}

// Take hands out one page. It never sleeps; an empty cache is a bug in the
// caller's top-up (the kernel WARNs and falls back to GFP_ATOMIC): the
// model records the violation RuleCacheEmpty and fails with ENOMEM, so
// the caller backs out without changing any page table.
// Kernel: kvm_mmu_memory_cache_alloc().
func (c *Cache) Take(t *sched.Thread) (addr.PFN, error) {
	c.lock()
	if len(c.pages) == 0 {
		c.unlock()
		ev := event.Event{Kind: event.KindViolation, Name: RuleCacheEmpty,
			Detail: fmt.Sprintf("%s: allocation under mmu_lock from an empty cache (not topped up)", c.name)}
		if t != nil {
			t.Emit(ev)
		}
		return 0, errno.Newf("kvm_mmu_memory_cache_alloc", errno.ENOMEM, "%s is empty", c.name)
	}
	p := c.pages[len(c.pages)-1]
	c.pages = c.pages[:len(c.pages)-1]
	c.Taken++
	c.unlock()
	return p, nil
}

// Return puts an unused page back (a DPAMT pair that was not needed).
func (c *Cache) Return(p addr.PFN) {
	c.lock()
	c.pages = append(c.pages, p)
	c.unlock()
}

// FreePage gives a page taken from this cache back to the host (free_page
// of a page-table page). The cache's source is checked by hostmem.
func (c *Cache) FreePage(t *sched.Thread, p addr.PFN) error {
	return c.mem.Free(t, p, c.src)
}

// Release frees every page still in the cache (kvm_mmu_free_memory_cache).
func (c *Cache) Release(t *sched.Thread) error {
	c.lock()
	pages := c.pages
	c.pages = nil
	c.unlock()
	var first error
	for _, p := range pages {
		if err := c.mem.Free(t, p, c.src); err != nil && first == nil {
			first = err
		}
	}
	return first
}
