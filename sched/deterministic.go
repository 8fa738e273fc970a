package sched

import (
	"runtime"
	"sync"
)

// deterministic runs one thread at a time and picks the next at every
// scheduling point with a seeded PRNG, so a seed names an interleaving.
// The running thread holds the baton (its run channel was signalled);
// everything here is touched only by the thread holding it.
type deterministic struct {
	s        *Scheduler
	strat    Strategy
	ndecide  uint64
	ready    []*Thread     // pick's buffer
	done     chan struct{} // closed when the last thread exits or the run fails
	nswitch  uint64
	schedule uint64 // FNV-1a over the ids of the threads picked, in order
}

func newDeterministic(s *Scheduler, seed uint64) *deterministic {
	return &deterministic{s: s, strat: Random(seed), done: make(chan struct{})}
}

func (d *deterministic) mode() Mode           { return Deterministic }
func (d *deterministic) switches() uint64     { return d.nswitch }
func (d *deterministic) scheduleHash() uint64 { return d.schedule }

func (d *deterministic) run(initial []*Thread) {
	if len(initial) == 0 {
		return
	}
	if next := d.pick(nil, false); next != nil {
		next.run <- struct{}{}
		<-d.done
	} else {
		d.fail(d.s.deadlock())
	}
}

// fail records the first failure and releases every parked thread so that
// Run can return without leaking goroutines.
func (d *deterministic) fail(err error) {
	if d.s.firstFailure(err) {
		d.s.abortRun()
		select {
		case <-d.done:
		default:
			close(d.done)
		}
	}
}

func (d *deterministic) begin(t *Thread) { d.awaitBaton(t) }

// awaitBaton parks the calling goroutine until the scheduler hands it the
// CPU, or ends it (runtime.Goexit, running deferred calls) on abort.
func (d *deterministic) awaitBaton(t *Thread) {
	select {
	case <-t.run:
	case <-d.s.abort:
		runtime.Goexit()
	}
}

func (d *deterministic) exit(t *Thread) {
	s := d.s
	if s.aborted.Load() {
		return
	}
	t.state = stateDone
	if len(t.held) > 0 {
		s.lockdep.report(t, "lockdep.held-at-exit", t.String()+" exited holding "+t.heldList())
	}
	next := d.pick(t, false)
	if next != nil {
		next.run <- struct{}{}
		return
	}
	if d.anyLive() {
		d.fail(s.deadlock())
		return
	}
	close(d.done)
}

func (d *deterministic) yield(t *Thread) {
	if d.s.aborted.Load() {
		return
	}
	d.switchFrom(t)
}

func (d *deterministic) relax(*Thread) {}

func (d *deterministic) waitUntil(t *Thread, desc string, cond func() bool) {
	if d.s.aborted.Load() {
		runtime.Goexit()
	}
	t.state, t.cond, t.condDesc = stateWaitCond, cond, desc
	d.switchFrom(t)
	t.cond, t.condDesc = nil, ""
}

// join is WaitUntil: the joiner is one more thread waiting for a
// condition, picked when the last of the group has exited.
func (d *deterministic) join(t *Thread, desc string, done func() bool, _ *sync.WaitGroup) {
	t.WaitUntil(desc, done)
}

// lockAborted skips the lock operation: nothing runs on after an abort but
// the deferred calls of threads ending.
func (d *deterministic) lockAborted(*Thread) {}

// selfWait needs no check: a thread waiting for itself blocks, and the
// deadlock report names it once every thread does.
func (d *deterministic) selfWait(*Thread, *lockCore, accessMode) {}

func (d *deterministic) block(t *Thread, l *lockCore, mode accessMode) {
	t.state, t.waitingOn, t.waitMode = stateBlocked, l, mode
	d.switchFrom(t)
	t.waitingOn = nil
}

func (d *deterministic) grant(t *Thread) { t.state = stateRunnable }

// switchFrom picks the next thread (possibly t itself) and passes it the CPU.
func (d *deterministic) switchFrom(t *Thread) {
	next := d.pick(t, t.state == stateRunnable)
	if next == nil {
		d.fail(d.s.deadlock())
		runtime.Goexit()
	}
	if next == t {
		return
	}
	d.nswitch++
	next.run <- struct{}{}
	d.awaitBaton(t)
}

// pick asks the strategy to choose among the runnable threads, in id
// order so the choice depends only on the strategy's state. from is the
// thread handing the CPU on (nil at the start); running, whether it can
// go on.
func (d *deterministic) pick(from *Thread, running bool) *Thread {
	ready := d.ready[:0]
	for _, t := range d.s.threads {
		switch t.state {
		case stateRunnable:
			ready = append(ready, t)
		case stateWaitCond:
			if t.cond() {
				t.state = stateRunnable
				ready = append(ready, t)
			}
		}
	}
	if len(ready) == 0 {
		return nil
	}
	d.ready = ready
	d.ndecide++
	t := ready[d.strat.Pick(from, running, ready)]
	if d.schedule == 0 {
		d.schedule = 14695981039346656037
	}
	d.schedule = (d.schedule ^ uint64(t.id)) * 1099511628211
	return t
}

func (d *deterministic) anyLive() bool {
	for _, t := range d.s.threads {
		if t.state != stateDone {
			return true
		}
	}
	return false
}
