package sched

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// parallel runs every thread on its own goroutine at once: a lock wait
// blocks on the thread's grant channel, a condition wait on a condition
// variable broadcast at the next scheduling point of any thread, a group's
// join on the group's WaitGroup. It cannot see every
// thread blocked, so it finds no deadlock but a thread waiting for a lock
// it holds itself.
type parallel struct {
	s *Scheduler

	// waiters counts threads in waitUntil; while it is 0 a scheduling
	// point costs one atomic load.
	waiters atomic.Int32
	mu      sync.Mutex
	changed *sync.Cond // on mu; broadcast at a scheduling point while someone waits
	gen     uint64     // under mu: scheduling points broadcast so far
}

func newParallel(s *Scheduler) *parallel {
	p := &parallel{s: s}
	p.changed = sync.NewCond(&p.mu)
	return p
}

func (p *parallel) mode() Mode           { return Parallel }
func (p *parallel) switches() uint64     { return 0 }
func (p *parallel) scheduleHash() uint64 { return 0 }

// run has nothing to drive: the goroutines run themselves.
func (p *parallel) run([]*Thread) {}

// fail records the first failure (a panic); the other threads run on.
func (p *parallel) fail(err error) { p.s.firstFailure(err) }

func (p *parallel) begin(*Thread) {}

func (p *parallel) exit(t *Thread) {
	t.flushSteps()
	t.state = stateDone
	p.notify()
}

func (p *parallel) yield(*Thread) {
	if p.s.aborted.Load() {
		runtime.Goexit()
	}
	p.notify()
}

// relaxPause is how long a real thread backs off in Relax: a retry loop
// on a transient condition (the VMM retrying KVM_SET_MEMORY_ATTRIBUTES2
// while another thread's fault holds a folio reference) must give that
// thread real time to finish, which on a loaded machine is more than a
// Gosched: the other goroutine may not even be on a CPU. Wall time
// changes no result here: parallel runs are the machine's interleaving.
const relaxPause = 50 * time.Microsecond

func (p *parallel) relax(*Thread) { time.Sleep(relaxPause) }

// notify wakes every thread in waitUntil to check its condition again:
// whatever another thread changed, it changed before its next scheduling
// point (a yield, a lock operation, a wait, its exit).
func (p *parallel) notify() {
	if p.waiters.Load() == 0 {
		return
	}
	p.mu.Lock()
	p.gen++
	p.changed.Broadcast()
	p.mu.Unlock()
}

// waitUntil sleeps until a scheduling point of another thread, then checks
// cond again. The generation is read before cond is checked, so a change
// made after the check is a later generation: no wake-up is lost.
func (p *parallel) waitUntil(t *Thread, desc string, cond func() bool) {
	t.flushSteps()
	p.notify() // what t changed before waiting is another's condition
	p.waiters.Add(1)
	defer p.waiters.Add(-1)
	for {
		p.mu.Lock()
		gen := p.gen
		p.mu.Unlock()
		if cond() {
			return
		}
		p.mu.Lock()
		for p.gen == gen && !p.s.aborted.Load() {
			p.changed.Wait()
		}
		p.mu.Unlock()
		if p.s.aborted.Load() {
			runtime.Goexit()
		}
	}
}

// join waits for a group's threads on its WaitGroup: only their exits
// wake the joiner, not every scheduling point. A thread ended by an abort
// still counts as done (its deferred calls run).
func (p *parallel) join(t *Thread, _ string, _ func() bool, wg *sync.WaitGroup) {
	t.countStep()
	t.flushSteps()
	p.notify()
	wg.Wait()
	if p.s.aborted.Load() {
		runtime.Goexit()
	}
}

// lockAborted ends the thread: it must never run on without the lock.
func (p *parallel) lockAborted(*Thread) { runtime.Goexit() }

// selfWait ends the run when t asks for a lock its own hold excludes. The
// deterministic scheduler finds this when every thread blocks; real
// goroutines would hang, so the run ends here with the same report, and
// every other thread at its next lock, yield or wait.
func (p *parallel) selfWait(t *Thread, l *lockCore, mode accessMode) {
	if !t.waitsForItself(l, mode) {
		return
	}
	if p.s.firstFailure(p.s.selfDeadlock(t, l, mode)) {
		p.s.abortRun()
		p.mu.Lock()
		p.changed.Broadcast() // the waiters see aborted
		p.mu.Unlock()
	}
	runtime.Goexit()
}

// block parks t until release grants it the lock. A bounded spin before
// parking was measured and lost on a shared 2-core machine: the grant is
// handed to the queue head, which is often a goroutine off its CPU.
func (p *parallel) block(t *Thread, _ *lockCore, _ accessMode) {
	t.flushSteps()
	select {
	case <-t.grant:
	case <-p.s.abort:
		runtime.Goexit()
	}
}

func (p *parallel) grant(t *Thread) { t.grant <- struct{}{} }
