// Package sched runs the model's simulated threads (vCPUs, the VMM, kernel
// workers) and provides the locks they take.
//
// Two schedulers stand behind one type:
//
//   - Deterministic: one simulated thread runs at a time; at every yield point
//     (each lock operation, each SEAMCALL boundary, each explicit Yield) a
//     PRNG seeded by the caller picks the next runnable thread. The same seed
//     gives the same interleaving, byte for byte. When every live thread is
//     blocked, Run returns a *DeadlockError naming the wait-for cycle.
//   - Parallel: real goroutines and blocking waits, for speed.
//
// Locks hand ownership to waiters in FIFO order (a writer waiting blocks new
// readers), like the kernel's rwsem and queued rwlock in process context.
package sched

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"sort"
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

// Scheduler owns a set of simulated threads and decides who runs.
type Scheduler struct {
	mode    Mode
	rng     *rand.Rand
	sink    event.Sink
	lockdep *LockDep
	step    atomic.Uint64

	// traceLocks makes every lock acquire and release an event (for
	// traces), not only the waits. Set before Run.
	traceLocks bool

	mu      sync.Mutex // guards threads (parallel spawns) and started
	threads []*Thread
	started bool
	wg      sync.WaitGroup

	// Deterministic mode only: touched by the one running thread.
	abort    chan struct{}
	aborted  atomic.Bool
	done     chan struct{}
	failure  error
	switches uint64
	schedule uint64 // FNV-1a over the ids of the threads picked, in order
}

// New returns a scheduler. seed matters only in Deterministic mode; sink may be
// nil (events are dropped).
func New(mode Mode, seed uint64, sink event.Sink) *Scheduler {
	if sink == nil {
		sink = event.Discard
	}
	s := &Scheduler{
		mode:  mode,
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		sink:  sink,
		abort: make(chan struct{}),
		done:  make(chan struct{}),
	}
	s.lockdep = newLockDep(sink)
	return s
}

// TraceLocks makes every lock acquire and release an event
// (event.KindLockAcquire, KindLockRelease), so that a trace can show lock
// holds; by default only waits are. Call before Run.
func (s *Scheduler) TraceLocks() { s.traceLocks = true }

// Mode reports which scheduler this is.
func (s *Scheduler) Mode() Mode { return s.mode }

// LockDep returns the lock-order checker, which watches every lock taken by
// this scheduler's threads.
func (s *Scheduler) LockDep() *LockDep { return s.lockdep }

// Sink returns the event sink threads write to.
func (s *Scheduler) Sink() event.Sink { return s.sink }

// Steps returns the number of yield points passed so far.
func (s *Scheduler) Steps() uint64 { return s.step.Load() }

// ScheduleHash identifies the interleaving a deterministic run took: a
// hash of the sequence of threads the scheduler picked. Two runs with the
// same hash ran the same interleaving (the fuzzer counts distinct ones).
func (s *Scheduler) ScheduleHash() uint64 { return s.schedule }

// Switches returns how many times the deterministic scheduler handed the CPU
// from one thread to another.
func (s *Scheduler) Switches() uint64 { return s.switches }

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
}

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
	if s.mode == Parallel {
		s.wg.Wait()
		return s.failure
	}
	if len(initial) == 0 {
		return nil
	}
	if next := s.pick(); next != nil {
		next.run <- struct{}{}
		<-s.done
	} else {
		s.fail(s.deadlock())
	}
	s.wg.Wait()
	return s.failure
}

func (s *Scheduler) start(t *Thread) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if s.mode == Deterministic {
			t.awaitBaton()
		}
		returned := false
		defer func() {
			if r := recover(); r != nil {
				s.fail(&PanicError{Thread: t.String(), Value: r, Stack: string(debug.Stack())})
			} else if !returned && !s.aborted.Load() {
				// runtime.Goexit inside model code (t.FailNow from a
				// test, for one): the thread can never hand the CPU
				// on, so the run ends here rather than hanging.
				s.fail(&PanicError{Thread: t.String(), Value: "runtime.Goexit in a simulated thread (t.FailNow?)", Stack: string(debug.Stack())})
			}
		}()
		t.fn(t)
		returned = true
		t.exit()
	}()
}

// fail records the first failure and, in deterministic mode, releases every
// parked thread so that Run can return without leaking goroutines.
func (s *Scheduler) fail(err error) {
	if s.firstFailure(err) && s.mode == Deterministic {
		s.aborted.Store(true)
		close(s.abort)
		select {
		case <-s.done:
		default:
			close(s.done)
		}
	}
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

// abortParallel ends a parallel run that can never finish (a thread
// waits for a lock it holds itself): the failure is recorded, and every
// thread ends at its next lock, yield or wait rather than run on.
func (s *Scheduler) abortParallel(err error) {
	if s.firstFailure(err) {
		s.aborted.Store(true)
		close(s.abort)
	}
}

// selfDeadlock is the report for t waiting for a lock it holds.
func (s *Scheduler) selfDeadlock(t *Thread, l *lockCore, mode accessMode) *DeadlockError {
	w := fmt.Sprintf("%s waits to %s %s held by %s", t, mode.verb(), l.describe(), t)
	return s.reportDeadlock(&DeadlockError{Step: s.step.Load(), Cycle: []string{w}, Blocked: []string{w}})
}

// reportDeadlock emits d as the sched.deadlock event and returns it.
func (s *Scheduler) reportDeadlock(d *DeadlockError) *DeadlockError {
	s.sink.Emit(event.Event{Kind: event.KindDeadlock, Step: d.Step, Thread: -1, Name: "sched.deadlock", Detail: d.Error()})
	return d
}

// awaitBaton parks the calling goroutine until the scheduler hands it the
// CPU, or ends it (runtime.Goexit, running deferred calls) on abort.
func (t *Thread) awaitBaton() {
	select {
	case <-t.run:
	case <-t.s.abort:
		runtime.Goexit()
	}
}

func (t *Thread) exit() {
	s := t.s
	if s.mode == Parallel {
		t.state = stateDone
		return
	}
	if s.aborted.Load() {
		return
	}
	t.state = stateDone
	if len(t.held) > 0 {
		s.lockdep.report(t, "lockdep.held-at-exit",
			fmt.Sprintf("%s exited holding %s", t, t.heldList()))
	}
	next := s.pick()
	if next != nil {
		next.run <- struct{}{}
		return
	}
	if s.anyLive() {
		s.fail(s.deadlock())
		return
	}
	close(s.done)
}

// Relax is a busy-wait's pause (cpu_relax, cond_resched): a scheduling
// point that, on the parallel scheduler, also lets other goroutines run.
func (t *Thread) Relax() {
	t.Yield()
	if t != nil && t.s.mode == Parallel {
		runtime.Gosched()
	}
}

// Yield is a scheduling point: the deterministic scheduler may switch to
// another runnable thread here.
func (t *Thread) Yield() {
	if t == nil {
		return
	}
	s := t.s
	s.step.Add(1)
	if s.mode == Parallel && s.aborted.Load() {
		runtime.Goexit()
	}
	if s.mode == Parallel || s.aborted.Load() {
		return
	}
	s.switchFrom(t)
}

// switchFrom picks the next thread (possibly t itself) and passes it the CPU.
func (s *Scheduler) switchFrom(t *Thread) {
	next := s.pick()
	if next == nil {
		s.fail(s.deadlock())
		runtime.Goexit()
	}
	if next == t {
		return
	}
	s.switches++
	next.run <- struct{}{}
	t.awaitBaton()
}

// pick chooses uniformly among runnable threads, in id order so the choice
// depends only on the PRNG.
func (s *Scheduler) pick() *Thread {
	var buf [16]*Thread
	ready := buf[:0]
	for _, t := range s.threads {
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
	var t *Thread
	switch len(ready) {
	case 0:
		return nil
	case 1:
		t = ready[0]
	default:
		t = ready[s.rng.IntN(len(ready))]
	}
	if s.schedule == 0 {
		s.schedule = 14695981039346656037
	}
	s.schedule = (s.schedule ^ uint64(t.id)) * 1099511628211
	return t
}

func (s *Scheduler) anyLive() bool {
	for _, t := range s.threads {
		if t.state != stateDone {
			return true
		}
	}
	return false
}

// WaitUntil blocks t until cond returns true; desc names what it waits for
// (e.g. "folio refcount == 1"), so a deadlock report can say so. cond must
// read only model state.
func (t *Thread) WaitUntil(desc string, cond func() bool) {
	s := t.s
	s.step.Add(1)
	if cond() {
		return
	}
	if s.mode == Parallel {
		for !cond() {
			if s.aborted.Load() {
				runtime.Goexit()
			}
			runtime.Gosched()
		}
		return
	}
	if s.aborted.Load() {
		runtime.Goexit()
	}
	t.state, t.cond, t.condDesc = stateWaitCond, cond, desc
	s.switchFrom(t)
	t.cond, t.condDesc = nil, ""
}

// Stamp fills in the step and thread of an event.
func (t *Thread) Stamp(e *event.Event) {
	if t == nil {
		e.Thread = -1
		return
	}
	e.Step = t.s.step.Load()
	e.Thread = t.id
}

// Emit stamps e and sends it to the scheduler's sink.
func (t *Thread) Emit(e event.Event) {
	t.Stamp(&e)
	t.s.sink.Emit(e)
}

// DeadlockError describes a state in which no thread can run.
type DeadlockError struct {
	Step    uint64
	Cycle   []string // "thread waits for <lock> held by thread", around the cycle
	Blocked []string // every blocked thread and what it waits for
}

func (e *DeadlockError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "deadlock at step %d", e.Step)
	if len(e.Cycle) > 0 {
		fmt.Fprintf(&b, ": wait-for cycle: %s", strings.Join(e.Cycle, "; "))
	} else {
		fmt.Fprintf(&b, ": every thread waits: %s", strings.Join(e.Blocked, "; "))
	}
	return b.String()
}

// deadlock builds the report: every blocked thread, and the cycle in the
// thread → lock-holder graph when there is one.
func (s *Scheduler) deadlock() *DeadlockError {
	d := &DeadlockError{Step: s.step.Load()}
	waitsFor := map[*Thread][]*Thread{}
	for _, t := range s.threads {
		switch t.state {
		case stateBlocked:
			l := t.waitingOn
			holders := l.holderThreads()
			d.Blocked = append(d.Blocked, fmt.Sprintf("%s waits to %s %s held by %s",
				t, t.waitMode.verb(), l.describe(), threadList(holders)))
			waitsFor[t] = holders
		case stateWaitCond:
			d.Blocked = append(d.Blocked, fmt.Sprintf("%s waits until %s", t, t.condDesc))
		}
	}
	// Find a cycle by walking from each blocked thread (graph is small).
	for _, start := range s.threads {
		if start.state != stateBlocked {
			continue
		}
		if cyc := findCycle(start, waitsFor); cyc != nil {
			for i, t := range cyc {
				next := cyc[(i+1)%len(cyc)]
				d.Cycle = append(d.Cycle, fmt.Sprintf("%s waits to %s %s held by %s",
					t, t.waitMode.verb(), t.waitingOn.describe(), next))
			}
			break
		}
	}
	return s.reportDeadlock(d)
}

func findCycle(start *Thread, g map[*Thread][]*Thread) []*Thread {
	var path []*Thread
	onPath := map[*Thread]int{}
	var dfs func(t *Thread) []*Thread
	visited := map[*Thread]bool{}
	dfs = func(t *Thread) []*Thread {
		if i, ok := onPath[t]; ok {
			return append([]*Thread(nil), path[i:]...)
		}
		if visited[t] {
			return nil
		}
		visited[t] = true
		onPath[t] = len(path)
		path = append(path, t)
		for _, n := range g[t] {
			if c := dfs(n); c != nil {
				return c
			}
		}
		path = path[:len(path)-1]
		delete(onPath, t)
		return nil
	}
	return dfs(start)
}

func threadList(ts []*Thread) string {
	if len(ts) == 0 {
		return "nobody (lost unlock?)"
	}
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.String()
		if t.state == stateDone {
			names[i] += " (exited)"
		}
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (t *Thread) heldList() string {
	names := make([]string, len(t.held))
	for i, h := range t.held {
		names[i] = h.lock.describe()
	}
	return strings.Join(names, ", ")
}
