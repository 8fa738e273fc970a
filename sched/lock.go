package sched

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tdxsim/tdxsim/event"
)

type lockKind uint8

const (
	kindMutex  lockKind = iota // struct mutex: sleepable, exclusive
	kindRWSem                  // struct rw_semaphore: sleepable, shared/exclusive
	kindRWLock                 // rwlock_t (e.g. x86 mmu_lock): spinning, shared/exclusive
	kindSpin                   // spinlock_t: spinning, exclusive
)

func (k lockKind) String() string {
	return [...]string{"mutex", "rwsem", "rwlock", "spinlock"}[k]
}

// atomic reports whether holding this kind of lock forbids sleeping.
func (k lockKind) atomic() bool { return k == kindRWLock || k == kindSpin }

type accessMode uint8

const (
	modeWrite accessMode = iota
	modeRead
)

func (m accessMode) verb() string {
	if m == modeRead {
		return "read-lock"
	}
	return "lock"
}

type waiter struct {
	t    *Thread
	mode accessMode
}

// lockCore is the state machine shared by every lock type and both
// schedulers: ownership passes to waiters in FIFO order at unlock; the
// engine decides only how a waiter waits and wakes.
type lockCore struct {
	class string
	kind  lockKind
	// class is lockdep's id of class (nil: not looked up yet), so that
	// taking a lock does not hash its name; it names its LockDep, as a
	// lock may outlive one scheduler.
	classRef atomic.Pointer[classRef]

	mu      sync.Mutex // parallel mode; uncontended in deterministic mode
	writer  *Thread
	readers []*Thread
	queue   []waiter
}

func (l *lockCore) describe() string { return fmt.Sprintf("%s %q", l.kind, l.class) }

func (l *lockCore) holderThreads() []*Thread {
	if l.writer != nil {
		return []*Thread{l.writer}
	}
	return append([]*Thread(nil), l.readers...)
}

func (l *lockCore) compatible(mode accessMode) bool {
	if l.writer != nil {
		return false
	}
	if mode == modeWrite {
		return len(l.readers) == 0
	}
	return true
}

func (l *lockCore) take(t *Thread, mode accessMode) {
	if mode == modeWrite {
		l.writer = t
	} else {
		l.readers = append(l.readers, t)
	}
}

type heldLock struct {
	lock *lockCore
	mode accessMode
}

// acquire takes l for t, blocking as the scheduler does.
func (l *lockCore) acquire(t *Thread, mode accessMode) {
	s := t.s
	if s.aborted.Load() {
		s.eng.lockAborted(t)
		return
	}
	s.lockdep.acquire(t, l, mode)
	s.eng.selfWait(t, l, mode)
	t.Yield()
	l.mu.Lock()
	if len(l.queue) == 0 && l.compatible(mode) {
		l.take(t, mode)
		l.mu.Unlock()
		t.held = append(t.held, heldLock{l, mode})
		if s.traceLocks {
			t.Emit(event.Event{Kind: event.KindLockAcquire, Name: l.class, Detail: mode.verb()})
		}
		return
	}
	l.queue = append(l.queue, waiter{t, mode})
	t.Emit(event.Event{Kind: event.KindLockWait, Name: l.class, Detail: mode.verb()})
	l.mu.Unlock()
	s.eng.block(t, l, mode)
	t.held = append(t.held, heldLock{l, mode})
	t.Emit(event.Event{Kind: event.KindLockAcquire, Name: l.class, Detail: mode.verb()})
}

// waitsForItself reports whether t asks for l in a mode its own hold
// excludes (a write hold, or a read hold asked to become a write): it can
// never be granted.
func (t *Thread) waitsForItself(l *lockCore, mode accessMode) bool {
	for _, h := range t.held {
		if h.lock == l && (h.mode == modeWrite || mode == modeWrite) {
			return true
		}
	}
	return false
}

// tryAcquire takes l if it is free for mode and nobody is queued.
func (l *lockCore) tryAcquire(t *Thread, mode accessMode) bool {
	s := t.s
	if s.aborted.Load() {
		return false
	}
	t.Yield()
	l.mu.Lock()
	ok := len(l.queue) == 0 && l.compatible(mode)
	if ok {
		l.take(t, mode)
	}
	l.mu.Unlock()
	if ok {
		s.lockdep.acquired(t, l, mode)
		t.held = append(t.held, heldLock{l, mode})
		if s.traceLocks {
			t.Emit(event.Event{Kind: event.KindLockAcquire, Name: l.class, Detail: mode.verb()})
		}
	}
	return ok
}

// release drops t's hold and grants the lock to the queue head(s).
func (l *lockCore) release(t *Thread, mode accessMode) {
	s := t.s
	if s.aborted.Load() {
		return
	}
	idx := -1
	for i := len(t.held) - 1; i >= 0; i-- {
		if t.held[i].lock == l && t.held[i].mode == mode {
			idx = i
			break
		}
	}
	if idx < 0 {
		s.lockdep.report(t, "lockdep.unlock-not-held",
			fmt.Sprintf("%s releases %s (%s) that it does not hold", t, l.describe(), mode.verb()))
		return
	}
	t.held = append(t.held[:idx], t.held[idx+1:]...)
	if s.traceLocks {
		t.Emit(event.Event{Kind: event.KindLockRelease, Name: l.class, Detail: mode.verb()})
	}
	l.mu.Lock()
	if mode == modeWrite {
		l.writer = nil
	} else {
		for i, r := range l.readers {
			if r == t {
				l.readers = append(l.readers[:i], l.readers[i+1:]...)
				break
			}
		}
	}
	var buf [4]*Thread // granted without a heap slice in the common case
	granted := buf[:0]
	for len(l.queue) > 0 && l.compatible(l.queue[0].mode) {
		w := l.popWaiter()
		l.take(w.t, w.mode)
		granted = append(granted, w.t)
		if w.mode == modeWrite {
			break
		}
	}
	l.mu.Unlock()
	for _, g := range granted {
		s.eng.grant(g)
	}
	t.Yield()
}

// popWaiter removes and returns the queue head. It shifts the rest down
// rather than reslicing past the head, so the queue keeps its backing
// array and a contended lock's next wait does not allocate; queues are as
// short as the threads waiting.
func (l *lockCore) popWaiter() waiter {
	w := l.queue[0]
	n := copy(l.queue, l.queue[1:])
	l.queue[n] = waiter{} // drop the thread pointer
	l.queue = l.queue[:n]
	return w
}

// classRef is a lock class's id in one LockDep.
type classRef struct {
	d  *LockDep
	id int
}

func newCore(class string, kind lockKind) lockCore {
	return lockCore{class: class, kind: kind}
}

// Mutex models struct mutex: sleepable and exclusive.
type Mutex struct{ c lockCore }

// NewMutex returns a mutex of the given lock class (e.g. "kvm->slots_lock").
func NewMutex(class string) *Mutex { return &Mutex{c: newCore(class, kindMutex)} }

// Lock is mutex_lock().
func (m *Mutex) Lock(t *Thread) { m.c.acquire(t, modeWrite) }

// TryLock is mutex_trylock().
func (m *Mutex) TryLock(t *Thread) bool { return m.c.tryAcquire(t, modeWrite) }

// Unlock is mutex_unlock().
func (m *Mutex) Unlock(t *Thread) { m.c.release(t, modeWrite) }

// Class returns the lock class name.
func (m *Mutex) Class() string { return m.c.class }

// RWSem models struct rw_semaphore (e.g. the filemap invalidate lock, or
// kvm->slots_lock's read side): sleepable, readers and writers, fair.
type RWSem struct{ c lockCore }

// NewRWSem returns an rwsem of the given lock class.
func NewRWSem(class string) *RWSem { return &RWSem{c: newCore(class, kindRWSem)} }

// Lock is down_write().
func (r *RWSem) Lock(t *Thread) { r.c.acquire(t, modeWrite) }

// Unlock is up_write().
func (r *RWSem) Unlock(t *Thread) { r.c.release(t, modeWrite) }

// RLock is down_read().
func (r *RWSem) RLock(t *Thread) { r.c.acquire(t, modeRead) }

// RUnlock is up_read().
func (r *RWSem) RUnlock(t *Thread) { r.c.release(t, modeRead) }

// Class returns the lock class name.
func (r *RWSem) Class() string { return r.c.class }

// RWLock models rwlock_t, the type of x86 KVM's mmu_lock: spinning (no
// sleeping while held, in either mode), readers and writers.
type RWLock struct{ c lockCore }

// NewRWLock returns an rwlock of the given lock class.
func NewRWLock(class string) *RWLock { return &RWLock{c: newCore(class, kindRWLock)} }

// Lock is write_lock().
func (r *RWLock) Lock(t *Thread) { r.c.acquire(t, modeWrite) }

// Unlock is write_unlock().
func (r *RWLock) Unlock(t *Thread) { r.c.release(t, modeWrite) }

// RLock is read_lock().
func (r *RWLock) RLock(t *Thread) { r.c.acquire(t, modeRead) }

// RUnlock is read_unlock().
func (r *RWLock) RUnlock(t *Thread) { r.c.release(t, modeRead) }

// HeldWrite reports whether t holds r for write (lockdep_assert_held_write).
func (r *RWLock) HeldWrite(t *Thread) bool { return t.holds(&r.c, modeWrite) }

// Held reports whether t holds r in any mode (lockdep_assert_held).
func (r *RWLock) Held(t *Thread) bool {
	return t.holds(&r.c, modeWrite) || t.holds(&r.c, modeRead)
}

// Class returns the lock class name.
func (r *RWLock) Class() string { return r.c.class }

// SpinLock models spinlock_t.
type SpinLock struct{ c lockCore }

// NewSpinLock returns a spinlock of the given lock class.
func NewSpinLock(class string) *SpinLock { return &SpinLock{c: newCore(class, kindSpin)} }

// Lock is spin_lock().
func (s *SpinLock) Lock(t *Thread) { s.c.acquire(t, modeWrite) }

// Unlock is spin_unlock().
func (s *SpinLock) Unlock(t *Thread) { s.c.release(t, modeWrite) }

// Class returns the lock class name.
func (s *SpinLock) Class() string { return s.c.class }

func (t *Thread) holds(l *lockCore, mode accessMode) bool {
	for _, h := range t.held {
		if h.lock == l && h.mode == mode {
			return true
		}
	}
	return false
}

// InAtomic reports whether t holds a spinning lock (a spinlock or an rwlock
// such as mmu_lock), where sleeping is forbidden.
func (t *Thread) InAtomic() bool {
	for _, h := range t.held {
		if h.lock.kind.atomic() {
			return true
		}
	}
	return false
}

// MightSleep is might_sleep(): called by code that may sleep (a GFP_KERNEL
// allocation, a mutex). Under a spinning lock it is a lockdep report.
func (t *Thread) MightSleep(what string) {
	if t == nil {
		return
	}
	t.s.lockdep.mightSleep(t, what)
}
