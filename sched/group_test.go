package sched

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// A group joins its threads under both schedulers and returns their
// errors in spawn order.
func TestGroupWaitsForAllAndJoinsErrors(t *testing.T) {
	for _, mode := range []Mode{Deterministic, Parallel} {
		s := New(mode, 7, nil)
		m := NewMutex("counter")
		var n int
		var err error
		s.Go("parent", func(pt *Thread) {
			g := NewGroup(pt, "children done")
			for i := range 4 {
				g.Go(fmt.Sprintf("child%d", i), func(ct *Thread) error {
					m.Lock(ct)
					n++
					m.Unlock(ct)
					if i%2 == 1 {
						return fmt.Errorf("child %d failed", i)
					}
					return nil
				})
			}
			err = g.Wait()
		})
		if runErr := s.Run(); runErr != nil {
			t.Fatalf("%s: %v", mode, runErr)
		}
		if n != 4 || err == nil || err.Error() != "child 1 failed\nchild 3 failed" {
			t.Fatalf("%s: n = %d, err = %q", mode, n, err)
		}
	}
}

// A group whose thread never returns is a deadlock the report names by
// the group's description.
func TestGroupNeverDoneIsDeadlock(t *testing.T) {
	s := New(Deterministic, 1, nil)
	s.Go("parent", func(pt *Thread) {
		g := NewGroup(pt, "every vCPU accepted")
		g.Go("vcpu0", func(ct *Thread) error {
			ct.WaitUntil("a wake-up that never comes", func() bool { return false })
			return nil
		})
		_ = g.Wait()
	})
	var d *DeadlockError
	if err := s.Run(); !errors.As(err, &d) || len(d.Blocked) != 2 || d.Blocked[0] != "parent[0] waits until every vCPU accepted" {
		t.Fatalf("Run = %v", err)
	}
}

// The parallel WaitUntil sleeps: a waiter costs no CPU while the condition
// is false, and wakes when another thread changes it and passes a
// scheduling point.
func TestParallelWaitUntilSleeps(t *testing.T) {
	s := New(Parallel, 0, nil)
	var flag atomic.Bool
	var checks atomic.Int64
	s.Go("waiter", func(t *Thread) {
		t.WaitUntil("flag set", func() bool { checks.Add(1); return flag.Load() })
	})
	s.Go("setter", func(t *Thread) {
		time.Sleep(50 * time.Millisecond) // the waiter is asleep by now
		runtime.Gosched()
		flag.Store(true)
		t.Yield()
	})
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	// A spinning wait checks many thousand times in 50ms; a sleeping one
	// at the entry, maybe at the setter's start, and once woken.
	if c := checks.Load(); c > 10 {
		t.Fatalf("the condition was checked %d times: the wait spins", c)
	}
}
