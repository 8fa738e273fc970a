// Package sched runs the model's simulated threads (vCPUs, the VMM, kernel
// workers) and provides the locks they take.
//
// Two schedulers stand behind one type, each an engine:
//
//   - Deterministic (deterministic.go): one simulated thread runs at a
//     time; at every yield point (each lock operation, each SEAMCALL
//     boundary, each explicit Yield) a PRNG seeded by the caller picks the
//     next runnable thread. The same seed gives the same interleaving, byte
//     for byte. When every live thread is blocked, Run returns a
//     *DeadlockError naming the wait-for cycle.
//   - Parallel (parallel.go): real goroutines and blocking waits, for speed.
//
// Locks hand ownership to waiters in FIFO order (a writer waiting blocks new
// readers), like the kernel's rwsem and queued rwlock in process context.
// Group spawns threads and joins them, as errgroup does goroutines.
package sched

import (
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tdxsim/tdxsim/event"
)

// Mode selects the scheduler.
type Mode uint8

// Scheduler modes.
const (
	Deterministic Mode = iota
	Parallel
)

func (m Mode) String() string {
	if m == Parallel {
		return "parallel"
	}
	return "deterministic"
}

type threadState uint8

const (
	stateRunnable threadState = iota
	stateBlocked              // waiting for a lock grant
	stateWaitCond             // waiting for a condition
	stateDone
)

// engine is one way of running the threads: who runs when, how a thread
// waits for a lock or a condition, and how a failure ends the run. Every
// method but run and fail is called on the goroutine of the thread t.
type engine interface {
	mode() Mode
	// run drives the started threads until every one has ended or the
	// run failed; it returns before their goroutines are gone.
	run(initial []*Thread)
	// begin returns when t may run its function.
	begin(t *Thread)
	// exit follows t's function's return.
	exit(t *Thread)
	// yield is a scheduling point (the step is counted already).
	yield(t *Thread)
	// relax is a busy-wait's pause after the yield.
	relax(t *Thread)
	// waitUntil blocks t until cond holds; cond was false when called.
	waitUntil(t *Thread, desc string, cond func() bool)
	// join blocks t until the threads of a group have returned: done
	// reports it, wg counts them.
	join(t *Thread, desc string, done func() bool, wg *sync.WaitGroup)
	// lockAborted is what a lock operation does once the run is aborted:
	// it returns when the operation is to be skipped.
	lockAborted(t *Thread)
	// selfWait runs before t queues for l in mode (after lockdep).
	selfWait(t *Thread, l *lockCore, mode accessMode)
	// block parks t, queued on l, until release grants it the lock.
	block(t *Thread, l *lockCore, mode accessMode)
	// grant makes t, queued on a lock just handed to it, run again.
	grant(t *Thread)
	// fail records err as the run's failure, and ends the run if this
	// engine must.
	fail(err error)
	switches() uint64
	scheduleHash() uint64
}

// Scheduler owns a set of simulated threads and decides who runs.
type Scheduler struct {
	eng     engine
	sink    event.Sink
	lockdep *LockDep
	// step counts scheduling points. The deterministic engine adds each
	// one as it passes; parallel threads count theirs in Thread.pending
	// and add them here in batches, so that cores do not bounce one
	// cache line at every scheduling point.
	step atomic.Uint64
	// parallel is eng.mode() == Parallel, kept as a field because
	// countStep reads it at every scheduling point.
	parallel bool

	// traceLocks makes every lock acquire and release an event (for
	// traces), not only the waits. Set before Run.
	traceLocks bool

	mu      sync.Mutex // guards threads (parallel spawns), started and failure
	threads []*Thread
	started bool
	failure error
	wg      sync.WaitGroup

	// abort is closed, and aborted set, when the run ends early: every
	// parked thread ends (runtime.Goexit) rather than leak.
	abort   chan struct{}
	aborted atomic.Bool
}

// New returns a scheduler. seed matters only in Deterministic mode; sink may be
// nil (events are dropped).
func New(mode Mode, seed uint64, sink event.Sink) *Scheduler {
	if sink == nil {
		sink = event.Discard
	}
	s := &Scheduler{sink: sink, abort: make(chan struct{}), parallel: mode == Parallel}
	if mode == Parallel {
		s.eng = newParallel(s)
	} else {
		s.eng = newDeterministic(s, seed)
	}
	s.lockdep = newLockDep(sink)
	return s
}

// TraceLocks makes every lock acquire and release an event
// (event.KindLockAcquire, KindLockRelease), so that a trace can show lock
// holds; by default only waits are. Call before Run.
func (s *Scheduler) TraceLocks() { s.traceLocks = true }

// Mode reports which scheduler this is.
func (s *Scheduler) Mode() Mode { return s.eng.mode() }

// LockDep returns the lock-order checker, which watches every lock taken by
// this scheduler's threads.
func (s *Scheduler) LockDep() *LockDep { return s.lockdep }

// Sink returns the event sink threads write to.
func (s *Scheduler) Sink() event.Sink { return s.sink }

// Steps returns the number of yield points passed so far. On the
// parallel scheduler a running thread adds its own in batches: during the
// run the count may lag by up to stepBatch per thread; once Run has
// returned it is exact.
func (s *Scheduler) Steps() uint64 { return s.step.Load() }

// stepBatch is how many scheduling points a parallel thread counts before
// adding them to the scheduler's count.
const stepBatch = 64

// countStep counts one scheduling point of t.
func (t *Thread) countStep() {
	if !t.s.parallel {
		t.s.step.Add(1)
		return
	}
	t.pending++
	if t.pending >= stepBatch {
		t.flushSteps()
	}
}

// flushSteps adds a parallel thread's pending steps to the scheduler's
// count: at a batch's end, and before the thread parks or ends, so that
// a quiet run's count is exact.
func (t *Thread) flushSteps() {
	if t.pending != 0 {
		t.s.step.Add(t.pending)
		t.pending = 0
	}
}

// SyncSteps adds the steps t has counted but not yet added to the
// scheduler's count, so that Steps is exact while t waits outside the
// scheduler (a thread parked on a channel of its own, in parallel mode,
// with the other threads quiet). Call it on t's goroutine.
func (t *Thread) SyncSteps() {
	if t != nil {
		t.flushSteps()
	}
}

// stepNow is the step t is at: the scheduler's count plus t's own not yet
// added (always 0 on the deterministic scheduler). Called on t's goroutine.
func (t *Thread) stepNow() uint64 { return t.s.step.Load() + t.pending }

// ScheduleHash identifies the interleaving a deterministic run took: a
// hash of the sequence of threads the scheduler picked. Two runs with the
// same hash ran the same interleaving (the fuzzer counts distinct ones).
// It is 0 for a parallel run.
func (s *Scheduler) ScheduleHash() uint64 { return s.eng.scheduleHash() }

// Switches returns how many times the deterministic scheduler handed the CPU
// from one thread to another (0 for a parallel run).
func (s *Scheduler) Switches() uint64 { return s.eng.switches() }

// Thread is a simulated thread. Model code receives its *Thread and passes it
// to every lock operation and SEAMCALL, the way kernel code runs on a task.
type Thread struct {
	s    *Scheduler
	id   int32
	name string
	fn   func(*Thread)

	state threadState
	run   chan struct{} // deterministic: baton
	grant chan struct{} // parallel: lock granted

	held      []heldLock
	edges     map[uint64]struct{} // lock-order edges this thread has recorded (lockdep)
	waitingOn *lockCore
	waitMode  accessMode
	cond      func() bool
	condDesc  string

	pending uint64 // parallel: scheduling points not yet added to s.step

	sigpending bool // a signal is pending for the task (see SignalPending)
	spinning   bool // in Spin: waiting for another thread's progress (the strategy may use it)

	local any // see Local
}

// Local is the value SetLocal left on the thread: state a layer keeps per
// simulated CPU across its calls, as a per-CPU variable, so that a call on
// the fault path neither allocates nor takes a shared pool (the TDX
// module's per-SEAMCALL lock record). Only the thread's own goroutine
// touches it. One layer uses it; a second would need a key. nil for a nil
// thread.
func (t *Thread) Local() any {
	if t == nil {
		return nil
	}
	return t.local
}

// SetLocal sets what Local returns; a nil thread keeps nothing.
func (t *Thread) SetLocal(v any) {
	if t != nil {
		t.local = v
	}
}

// SetSignalPending marks (or clears) a signal pending for the task the
// thread stands for, as a VMM's SIGINT or a timer would leave it.
func (t *Thread) SetSignalPending(p bool) {
	if t != nil {
		t.sigpending = p
	}
}

// SignalPending is signal_pending(current) for the thread; false for a nil
// thread (a caller outside any scheduler).
func (t *Thread) SignalPending() bool { return t != nil && t.sigpending }

// ID returns the thread's id: its spawn order, from 0.
func (t *Thread) ID() int32 { return t.id }

// Name returns the name given at spawn.
func (t *Thread) Name() string { return t.name }

// Scheduler returns the scheduler running t.
func (t *Thread) Scheduler() *Scheduler { return t.s }

func (t *Thread) String() string { return fmt.Sprintf("%s[%d]", t.name, t.id) }

// Go registers a thread. Before Run it waits for Run; during Run (called
// from a running thread through Thread.Go) it becomes runnable at once.
func (s *Scheduler) Go(name string, fn func(*Thread)) *Thread {
	s.mu.Lock()
	t := &Thread{s: s, id: int32(len(s.threads)), name: name, fn: fn,
		run: make(chan struct{}, 1), grant: make(chan struct{}, 1)}
	s.threads = append(s.threads, t)
	started := s.started
	s.mu.Unlock()
	if started {
		s.start(t)
	}
	return t
}

// Go spawns a new thread from within a running one.
func (t *Thread) Go(name string, fn func(*Thread)) *Thread { return t.s.Go(name, fn) }

// PanicError is returned by Run when a simulated thread panicked: model code
// must not panic, so this is always a bug in the model.
type PanicError struct {
	Thread string
	Value  any
	Stack  string
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("thread %s panicked: %v\n%s", e.Thread, e.Value, e.Stack)
}

// ErrAlreadyRun is returned by a second call to Run.
var ErrAlreadyRun = errors.New("sched: Run called twice")

// Run runs every registered thread (and those they spawn) to completion. In
// Deterministic mode it returns a *DeadlockError when all live threads block.
func (s *Scheduler) Run() error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return ErrAlreadyRun
	}
	s.started = true
	initial := append([]*Thread(nil), s.threads...)
	s.mu.Unlock()
	for _, t := range initial {
		s.start(t)
	}
	s.eng.run(initial)
	s.wg.Wait()
	return s.failure
}

func (s *Scheduler) start(t *Thread) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer t.flushSteps() // after the function, whether it returned or ended
		s.eng.begin(t)
		returned := false
		defer func() {
			if r := recover(); r != nil {
				s.eng.fail(&PanicError{Thread: t.String(), Value: r, Stack: string(debug.Stack())})
			} else if !returned && !s.aborted.Load() {
				// runtime.Goexit inside model code (t.FailNow from a
				// test, for one): the thread can never hand the CPU
				// on, so the run ends here rather than hanging.
				s.eng.fail(&PanicError{Thread: t.String(), Value: "runtime.Goexit in a simulated thread (t.FailNow?)", Stack: string(debug.Stack())})
			}
		}()
		t.fn(t)
		returned = true
		s.eng.exit(t)
	}()
}

// firstFailure records err as the run's failure unless one is recorded
// already, and reports whether it was the first.
func (s *Scheduler) firstFailure(err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failure != nil {
		return false
	}
	s.failure = err
	return true
}

// abortRun ends the run early: every parked thread ends at once, and every
// running one at its next lock, yield or wait. Called once, by whoever
// recorded the first failure.
func (s *Scheduler) abortRun() {
	s.aborted.Store(true)
	close(s.abort)
}

// Relax is a busy-wait's pause (cpu_relax, cond_resched): Spin that, on
// the parallel scheduler, also lets other goroutines run for a while.
func (t *Thread) Relax() {
	t.Spin()
	if t != nil {
		t.s.eng.relax(t)
	}
}

// Spin is the scheduling point of a retry loop: t cannot make progress
// until another thread does (a fault retried while an invalidation is in
// progress, a SEAMCALL retried on BUSY). It is Yield, and it tells the
// deterministic scheduler's strategy so: a priority strategy (PCT) must
// not pick a spinning thread over the threads it waits for, or a
// higher-priority spinner runs forever.
func (t *Thread) Spin() {
	if t == nil {
		return
	}
	t.spinning = true
	t.Yield()
	t.spinning = false
}

// Yield is a scheduling point: the deterministic scheduler may switch to
// another runnable thread here.
func (t *Thread) Yield() {
	if t == nil {
		return
	}
	t.countStep()
	t.s.eng.yield(t)
}

// WaitUntil blocks t until cond returns true; desc names what it waits for
// (e.g. "folio refcount == 1"), so a deadlock report can say so. cond must
// read only model state, through atomics or under the locks that guard it:
// the parallel scheduler re-checks it, on the waiting goroutine, after
// another thread passes a scheduling point.
func (t *Thread) WaitUntil(desc string, cond func() bool) {
	t.countStep()
	if cond() {
		return
	}
	t.s.eng.waitUntil(t, desc, cond)
}

// Stamp fills in the step and thread of an event.
func (t *Thread) Stamp(e *event.Event) {
	if t == nil {
		e.Thread = -1
		return
	}
	e.Step = t.stepNow()
	e.Thread = t.id
}

// Emit stamps e and sends it to the scheduler's sink.
func (t *Thread) Emit(e event.Event) {
	t.Stamp(&e)
	t.s.sink.Emit(e)
}

func (t *Thread) heldList() string {
	names := make([]string, len(t.held))
	for i, h := range t.held {
		names[i] = h.lock.describe()
	}
	return strings.Join(names, ", ")
}
