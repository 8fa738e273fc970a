// Package event is the typed record of a run. Every layer writes events
// (SEAMCALLs with their status, lock waits, allocations, violations); reports,
// checks and traces read them. A run is its events.
//
// Events are counted, not kept, unless a trace or reproducer asks for them:
// the Sink is an interface and the Counter sink costs a few nanoseconds.
package event

import (
	"fmt"
	"maps"
	"sort"
	"sync"
)

// Kind says what happened.
type Kind uint8

// Event kinds.
const (
	KindSeamcall    Kind = iota + 1 // a host SEAMCALL returned (Leaf, Status, Args)
	KindTdcall                      // a guest TDCALL returned
	KindAlloc                       // hostmem allocated a block (Args[0]=pfn, Args[1]=order)
	KindFree                        // hostmem freed a block
	KindLockWait                    // a thread blocked on a lock (Name = class)
	KindLockAcquire                 // a thread took a lock after waiting
	KindViolation                   // an invariant or rule was broken (Name = rule)
	KindDeadlock                    // every thread blocked (Detail = wait-for cycle)
	KindNote                        // free-form milestone (Name = phase)
	KindGmem                        // a guest_memfd operation completed (Name = op, Args = offset, length, Status = errno)
	KindKVM                         // a KVM VM-level event (Name = ioctl or event such as "invalidate_begin", "vm_bugged")
	KindMMU                         // a TDP MMU change (Name = "map", "zap", "link", "free_pt"; Args = gfn, level, pfn, root: 0 direct, 1 mirror)
	KindTDX                         // KVM's TDX code (Name = ioctl, hook or phase; Args per name)
	KindLockRelease                 // a thread released a lock (only when the scheduler traces locks)
	numKinds
)

var kindNames = [...]string{
	KindSeamcall:    "seamcall",
	KindTdcall:      "tdcall",
	KindAlloc:       "alloc",
	KindFree:        "free",
	KindLockWait:    "lock_wait",
	KindLockAcquire: "lock_acquire",
	KindMMU:         "mmu",
	KindTDX:         "tdx",
	KindViolation:   "violation",
	KindDeadlock:    "deadlock",
	KindNote:        "note",
	KindGmem:        "gmem",
	KindKVM:         "kvm",
	KindLockRelease: "lock_release",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Event is one record. Fields not relevant to a kind are zero.
type Event struct {
	Step   uint64    // scheduler step at which it happened
	Thread int32     // simulated thread id (-1 when outside any thread)
	Kind   Kind      //
	Leaf   uint16    // SEAMCALL/TDCALL leaf number
	Status uint64    // SEAMCALL/TDCALL status (RAX)
	Args   [4]uint64 // operands: RCX, RDX, R8, R9 for SEAMCALLs
	Name   string    // leaf name, lock class, or violated rule
	Detail string    // human-readable detail
}

func (e Event) String() string {
	switch e.Kind {
	case KindSeamcall, KindTdcall:
		return fmt.Sprintf("step %d thread %d %s %s(0x%x, 0x%x, 0x%x) = 0x%016x %s",
			e.Step, e.Thread, e.Kind, e.Name, e.Args[0], e.Args[1], e.Args[2], e.Status, e.Detail)
	}
	return fmt.Sprintf("step %d thread %d %s %s %s", e.Step, e.Thread, e.Kind, e.Name, e.Detail)
}

// Sink receives events. Implementations must be safe for concurrent use:
// the parallel scheduler emits from several goroutines.
type Sink interface {
	Emit(e Event)
}

// Discard drops every event.
var Discard Sink = discard{}

type discard struct{}

func (discard) Emit(Event) {}

// Counter counts events by kind and SEAMCALL/TDCALL leaf name, and keeps
// violations and deadlocks (rare, and the reason a run exists).
type Counter struct {
	mu         sync.Mutex
	kinds      [numKinds]uint64
	calls      map[string]uint64
	failed     map[string]uint64
	violations []Event
}

// NewCounter returns an empty counting sink.
func NewCounter() *Counter {
	return &Counter{calls: map[string]uint64{}, failed: map[string]uint64{}}
}

// Emit counts e.
func (c *Counter) Emit(e Event) {
	c.mu.Lock()
	if e.Kind < numKinds {
		c.kinds[e.Kind]++
	}
	switch e.Kind {
	case KindSeamcall, KindTdcall:
		c.calls[e.Name]++
		if e.Status != 0 {
			c.failed[e.Name]++
		}
	case KindViolation, KindDeadlock:
		c.violations = append(c.violations, e)
	}
	c.mu.Unlock()
}

// Kind returns how many events of kind k were emitted.
func (c *Counter) Kind(k Kind) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kinds[k]
}

// Calls returns SEAMCALL/TDCALL counts by leaf name (a copy).
func (c *Counter) Calls() map[string]uint64 { return c.copyMap(c.calls) }

// Failed returns counts of calls that returned a non-zero status, by leaf name.
func (c *Counter) Failed() map[string]uint64 { return c.copyMap(c.failed) }

func (c *Counter) copyMap(m map[string]uint64) map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(m)
}

// Violations returns the violation and deadlock events, in emission order.
func (c *Counter) Violations() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.violations...)
}

// Recorder keeps every event, for traces, reproducers and tests.
type Recorder struct {
	mu     sync.Mutex
	events []Event
}

// Emit appends e.
func (r *Recorder) Emit(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// Events returns a copy of everything recorded.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Filter returns the recorded events of kind k.
func (r *Recorder) Filter(k Kind) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// Tee sends each event to every sink in order.
type Tee []Sink

// Emit forwards e.
func (t Tee) Emit(e Event) {
	for _, s := range t {
		s.Emit(e)
	}
}

// SortedKeys returns the keys of a count map in sorted order, so reports that
// iterate counts print them deterministically.
func SortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
