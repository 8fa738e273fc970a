package sched

import (
	"errors"
	"sync"
	"sync/atomic"
)

// Group is threads spawned together and joined together, as
// golang.org/x/sync/errgroup does goroutines: Go spawns each from the
// thread that made the group, and Wait blocks that thread until every one
// has returned, then joins their errors in spawn order. Unlike errgroup,
// one failing does not cancel the others: the model's threads stop where
// the kernel's would.
type Group struct {
	t    *Thread
	desc string
	mu   sync.Mutex
	errs []*error // one per thread, in spawn order; each written by its thread
	done atomic.Int32
	wg   sync.WaitGroup // the same count, for the parallel scheduler's join
}

// NewGroup returns an empty group of threads spawned from t; desc names
// what Wait waits for ("every vCPU accepted"), for a deadlock report.
func NewGroup(t *Thread, desc string) *Group { return &Group{t: t, desc: desc} }

// Go spawns fn as a thread named name.
func (g *Group) Go(name string, fn func(*Thread) error) *Thread {
	slot := new(error)
	g.mu.Lock()
	g.errs = append(g.errs, slot)
	g.mu.Unlock()
	g.wg.Add(1)
	return g.t.Go(name, func(t *Thread) {
		defer g.wg.Done()
		defer g.done.Add(1)
		*slot = fn(t)
	})
}

// Wait blocks until every thread of the group has returned (a scheduling
// point, as WaitUntil) and returns their errors joined, nil if none failed.
func (g *Group) Wait() error {
	g.mu.Lock()
	n := int32(len(g.errs))
	g.mu.Unlock()
	g.t.s.eng.join(g.t, g.desc, func() bool { return g.done.Load() == n }, &g.wg)
	errs := make([]error, 0, n)
	g.mu.Lock()
	for _, e := range g.errs[:n] {
		errs = append(errs, *e)
	}
	g.mu.Unlock()
	return errors.Join(errs...)
}
