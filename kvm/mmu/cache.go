package mmu

import (
	"fmt"

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
// (seed 003: KVM's page-table pages are never mixed with PAMT pages).
//
// A cache belongs to one vCPU (or one VM operation) and is used by one
// thread at a time, as in the kernel.
type Cache struct {
	name     string
	mem      *hostmem.Memory
	src      hostmem.Source
	acct     hostmem.Account
	min      int // kvm_mmu_topup_memory_cache(mc, min)
	capacity int // mc->capacity: a top-up fills to here
	pages    []addr.PFN

	// TopUps counts top-ups that allocated; Allocated and Taken count
	// pages.
	TopUps, Allocated, Taken uint64
}

// NewCache returns an empty cache whose pages are charged to acct and come
// from the hostmem source named name.
func NewCache(mem *hostmem.Memory, name string, acct hostmem.Account, min, capacity int) (*Cache, error) {
	src, err := mem.RegisterSource(name)
	if err != nil {
		return nil, err
	}
	return &Cache{name: name, mem: mem, src: src, acct: acct, min: min, capacity: max(capacity, min)}, nil
}

// Len returns the number of pages ready.
func (c *Cache) Len() int { return len(c.pages) }

// TopUp fills the cache to capacity when it holds fewer than min pages,
// with GFP_KERNEL_ACCOUNT allocations that may sleep: calling it under
// mmu_lock is a lockdep report. Kernel: kvm_mmu_topup_memory_cache().
// Errors: ENOMEM when the host is out of memory (the pages got so far stay).
func (c *Cache) TopUp(t *sched.Thread) error {
	return c.TopUpTo(t, c.min)
}

// TopUpTo is TopUp with an explicit minimum (__kvm_mmu_topup_memory_cache).
func (c *Cache) TopUpTo(t *sched.Thread, min int) error {
	if len(c.pages) >= min {
		return nil
	}
	c.TopUps++
	if t != nil {
		t.Emit(event.Event{Kind: event.KindMMU, Name: "cache_topup", Detail: c.name})
	}
	for len(c.pages) < max(c.capacity, min) {
		p, err := c.mem.Alloc(t, hostmem.Request{Source: c.src, Account: c.acct, Charged: true})
		if err != nil {
			if len(c.pages) >= min {
				return nil
			}
			return errno.Newf("kvm_mmu_topup_memory_cache", errno.ENOMEM, "%s: %v", c.name, err)
		}
		c.pages = append(c.pages, p)
		c.Allocated++
	}
	return nil
}

// Take hands out one page. It never sleeps; an empty cache is a bug in the
// caller's top-up (the kernel WARNs and falls back to GFP_ATOMIC): the
// model records the violation "mmu.cache-empty" and fails with ENOMEM, so
// the caller backs out without changing any page table.
// Kernel: kvm_mmu_memory_cache_alloc().
func (c *Cache) Take(t *sched.Thread) (addr.PFN, error) {
	if len(c.pages) == 0 {
		ev := event.Event{Kind: event.KindViolation, Name: "mmu.cache-empty",
			Detail: fmt.Sprintf("%s: allocation under mmu_lock from an empty cache (not topped up)", c.name)}
		if t != nil {
			t.Emit(ev)
		}
		return 0, errno.Newf("kvm_mmu_memory_cache_alloc", errno.ENOMEM, "%s is empty", c.name)
	}
	p := c.pages[len(c.pages)-1]
	c.pages = c.pages[:len(c.pages)-1]
	c.Taken++
	return p, nil
}

// Return puts an unused page back (a DPAMT pair that was not needed).
func (c *Cache) Return(p addr.PFN) { c.pages = append(c.pages, p) }

// FreePage gives a page taken from this cache back to the host (free_page
// of a page-table page). The cache's source is checked by hostmem.
func (c *Cache) FreePage(t *sched.Thread, p addr.PFN) error {
	return c.mem.Free(t, p, c.src)
}

// Release frees every page still in the cache (kvm_mmu_free_memory_cache).
func (c *Cache) Release(t *sched.Thread) error {
	var first error
	for _, p := range c.pages {
		if err := c.mem.Free(t, p, c.src); err != nil && first == nil {
			first = err
		}
	}
	c.pages = nil
	return first
}
