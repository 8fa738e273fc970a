package sched

import (
	"fmt"
	"strings"
	"sync"

	"github.com/tdxsim/tdxsim/event"
)

// Report is one finding of the lock-order checker.
type Report struct {
	Rule   string // lockdep.abba, lockdep.recursive, lockdep.sleep-in-atomic, ...
	Thread string
	Step   uint64
	Detail string
}

func (r Report) String() string {
	return fmt.Sprintf("%s at step %d on %s: %s", r.Rule, r.Step, r.Thread, r.Detail)
}

// LockDep is the lock-order checker, after the kernel's lockdep: it records
// the order in which lock classes are taken over the whole run, and reports
// a cycle in that order (ABBA), recursive locking of one lock, and sleeping
// while a spinning lock is held — whether or not this run hung.
type LockDep struct {
	mu      sync.Mutex
	sink    event.Sink
	classes map[string]int
	names   []string
	kinds   []lockKind
	after   []map[int]string // after[a][b] = where a→b was first seen
	reports []Report
	seen    map[string]bool
}

func newLockDep(sink event.Sink) *LockDep {
	return &LockDep{sink: sink, classes: map[string]int{}, seen: map[string]bool{}}
}

// Reports returns every finding so far, in the order found.
func (d *LockDep) Reports() []Report {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Report(nil), d.reports...)
}

// Edges returns the recorded class order as "A -> B" strings, sorted by
// first appearance of A and then B, for tests and reports.
func (d *LockDep) Edges() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for a, m := range d.after {
		for b := range d.names {
			if _, ok := m[b]; ok {
				out = append(out, d.names[a]+" -> "+d.names[b])
			}
		}
	}
	return out
}

func (d *LockDep) classID(l *lockCore) int {
	if id, ok := d.classes[l.class]; ok {
		return id
	}
	id := len(d.names)
	d.classes[l.class] = id
	d.names = append(d.names, l.class)
	d.kinds = append(d.kinds, l.kind)
	d.after = append(d.after, map[int]string{})
	return id
}

// acquire is called before t tries to take l in mode.
func (d *LockDep) acquire(t *Thread, l *lockCore, mode accessMode) {
	for _, h := range t.held {
		if h.lock != l {
			continue
		}
		if h.mode == modeRead && mode == modeRead && l.kind == kindRWLock {
			continue // recursive read of an rwlock_t is allowed
		}
		rule := "lockdep.recursive"
		what := fmt.Sprintf("%s takes %s (%s) while already holding it (%s)",
			t, l.describe(), mode.verb(), h.mode.verb())
		if h.mode == modeWrite && mode == modeRead && l.kind == kindRWSem {
			rule = "lockdep.rwsem-read-in-write"
		}
		d.report(t, rule, what)
	}
	if mode == modeWrite || l.kind == kindRWSem {
		if l.kind == kindMutex || l.kind == kindRWSem {
			d.mightSleep(t, "taking "+l.describe())
		}
	}
	d.acquired(t, l, mode)
}

// id returns l's class id, looking the class up (under d.mu) only the
// first time the lock is taken.
func (d *LockDep) id(l *lockCore) int {
	if r := l.classRef.Load(); r != nil && r.d == d {
		return r.id
	}
	d.mu.Lock()
	id := d.classID(l)
	d.mu.Unlock()
	l.classRef.Store(&classRef{d, id})
	return id
}

// acquired records the class-order edges from every lock t holds to l.
// An edge this thread has recorded before needs no lock: the shared
// graph is only consulted (under d.mu) for an edge new to the thread, so
// threads on real goroutines do not all serialize on lockdep.
func (d *LockDep) acquired(t *Thread, l *lockCore, mode accessMode) {
	to := d.id(l)
	if len(t.held) == 0 {
		return
	}
	var fresh []int
	for _, h := range t.held {
		from := d.id(h.lock)
		if from == to {
			continue // same class, another instance (nesting annotations omitted)
		}
		key := uint64(from)<<32 | uint64(to)
		if _, ok := t.edges[key]; ok {
			continue
		}
		if t.edges == nil {
			t.edges = map[uint64]struct{}{}
		}
		t.edges[key] = struct{}{}
		fresh = append(fresh, from)
	}
	if len(fresh) == 0 {
		return
	}
	d.mu.Lock()
	var found []Report
	for _, from := range fresh {
		if _, ok := d.after[from][to]; ok {
			continue
		}
		where := fmt.Sprintf("%s: %s then %s", t, d.names[from], d.names[to])
		d.after[from][to] = where
		if path := d.path(to, from); path != nil {
			chain := make([]string, 0, len(path)+1)
			for i := 0; i+1 < len(path); i++ {
				chain = append(chain, d.after[path[i]][path[i+1]])
			}
			key := "abba:" + d.cycleKey(append(path, to))
			if !d.seen[key] {
				d.seen[key] = true
				found = append(found, Report{Rule: "lockdep.abba", Thread: t.String(), Step: t.stepNow(),
					Detail: fmt.Sprintf("lock order cycle: %s now, after earlier %s",
						where, strings.Join(chain, "; "))})
			}
		}
	}
	d.mu.Unlock()
	for _, r := range found {
		d.emit(t, r)
	}
}

// path returns a chain of classes from a to b along recorded edges, or nil.
func (d *LockDep) path(a, b int) []int {
	prev := make([]int, len(d.names))
	for i := range prev {
		prev[i] = -1
	}
	prev[a] = a
	queue := []int{a}
	for len(queue) > 0 {
		x := queue[0]
		queue = queue[1:]
		if x == b {
			var p []int
			for y := b; y != a; y = prev[y] {
				p = append([]int{y}, p...)
			}
			return append([]int{a}, p...)
		}
		for y := range d.names { // id order: deterministic
			if _, ok := d.after[x][y]; ok && prev[y] < 0 {
				prev[y] = x
				queue = append(queue, y)
			}
		}
	}
	return nil
}

func (d *LockDep) cycleKey(ids []int) string {
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = d.names[id]
	}
	return strings.Join(names, ">")
}

func (d *LockDep) mightSleep(t *Thread, what string) {
	for _, h := range t.held {
		if h.lock.kind.atomic() {
			d.report(t, "lockdep.sleep-in-atomic",
				fmt.Sprintf("%s: %s while holding %s (%s)", t, what, h.lock.describe(), h.mode.verb()))
			return
		}
	}
}

// report records a finding once per (rule, detail without thread) key.
func (d *LockDep) report(t *Thread, rule, detail string) {
	d.mu.Lock()
	key := rule + ":" + strings.TrimPrefix(detail, t.String())
	dup := d.seen[key]
	d.seen[key] = true
	d.mu.Unlock()
	if !dup {
		d.emit(t, Report{Rule: rule, Thread: t.String(), Step: t.stepNow(), Detail: detail})
	}
}

func (d *LockDep) emit(t *Thread, r Report) {
	d.mu.Lock()
	d.reports = append(d.reports, r)
	d.mu.Unlock()
	t.Emit(event.Event{Kind: event.KindViolation, Name: r.Rule, Detail: r.Detail})
}
