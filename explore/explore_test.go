package explore

import (
	"fmt"
	"testing"

	"github.com/tdxsim/tdxsim/sched"
)

// yielders runs n threads that each yield steps times under st and
// returns the order the threads ran their steps in, as the hash.
func yielders(n, steps int) func(sched.Strategy) (string, []string) {
	return func(st sched.Strategy) (string, []string) {
		s := sched.NewWith(st, nil)
		var order []int32
		for range n {
			s.Go("y", func(t *sched.Thread) {
				for range steps {
					order = append(order, t.ID())
					t.Yield()
				}
			})
		}
		s.Run()
		return fmt.Sprint(order), nil
	}
}

// TestContextBoundCounts: two threads of s steps each. With no
// preemption only the first thread is chosen (2 schedules); each
// preemption bound admits more, and the space is exhausted.
func TestContextBoundCounts(t *testing.T) {
	prev := 0
	for k := range 3 {
		r := search(Config{Preemptions: k}, yielders(2, 3))
		if !r.Exhausted || r.Violation != nil {
			t.Fatalf("k=%d: exhausted %v violation %v", k, r.Exhausted, r.Violation)
		}
		if r.Distinct > r.Schedules {
			t.Errorf("k=%d: %d distinct of %d schedules", k, r.Distinct, r.Schedules)
		}
		if k == 0 && r.Distinct != 2 {
			t.Errorf("k=0: %d interleavings, want 2 (which thread starts)", r.Distinct)
		}
		if r.Schedules <= prev {
			t.Errorf("k=%d: %d schedules, not more than k-1's %d", k, r.Schedules, prev)
		}
		prev = r.Schedules
	}
}

// TestFindsViolation: a "bug" needing one preemption (the other thread
// runs between the first thread's two steps) is found at k=1, not at
// k=0, and its picks replay it.
func TestFindsViolation(t *testing.T) {
	prog := func(st sched.Strategy) (string, []string) {
		s := sched.NewWith(st, nil)
		var order []int32
		for range 2 {
			s.Go("y", func(t *sched.Thread) {
				for range 2 {
					order = append(order, t.ID())
					t.Yield()
				}
			})
		}
		s.Run()
		if order[0] != order[1] {
			return fmt.Sprint(order), []string{"interleaved"}
		}
		return fmt.Sprint(order), nil
	}
	if r := search(Config{Preemptions: 0}, prog); r.Violation != nil || !r.Exhausted {
		t.Fatalf("k=0 found %v (exhausted %v); the bug needs a preemption", r.Violation, r.Exhausted)
	}
	r := search(Config{Preemptions: 1}, prog)
	if r.Violation == nil || r.Violation.Preemptions != 1 {
		t.Fatalf("k=1: %+v", r.Violation)
	}
	if h, broken := prog(&recorder{prefix: r.Violation.Picks}); len(broken) == 0 {
		t.Fatalf("picks %v replay to %s, not the violation", r.Violation.Picks, h)
	}
}

// TestCaps: MaxSchedules stops the search and says it was not exhausted.
func TestCaps(t *testing.T) {
	r := search(Config{Preemptions: 2, MaxSchedules: 3}, yielders(3, 3))
	if r.Schedules != 3 || r.Exhausted {
		t.Fatalf("%d schedules, exhausted %v", r.Schedules, r.Exhausted)
	}
}
