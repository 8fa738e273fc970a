package sched

import (
	"slices"
	"testing"
)

// yielders runs n threads that each yield steps times under strat and
// returns the order in which threads ran at each step, and the switches.
func yielders(strat Strategy, n, steps int) ([]int32, uint64) {
	s := NewWith(strat, nil)
	var order []int32
	for i := range n {
		s.Go("y", func(t *Thread) {
			_ = i
			for range steps {
				order = append(order, t.ID())
				t.Yield()
			}
		})
	}
	if err := s.Run(); err != nil {
		panic(err)
	}
	return order, s.Switches()
}

func TestPCTDeterministic(t *testing.T) {
	a, _ := yielders(PCT(5, 3, 40), 3, 12)
	b, _ := yielders(PCT(5, 3, 40), 3, 12)
	if string(fmtIDs(a)) != string(fmtIDs(b)) {
		t.Fatalf("same seed, different schedules:\n%v\n%v", a, b)
	}
	distinct := map[string]bool{}
	for seed := uint64(1); seed <= 20; seed++ {
		o, _ := yielders(PCT(seed, 3, 40), 3, 12)
		distinct[string(fmtIDs(o))] = true
	}
	if len(distinct) < 5 {
		t.Errorf("20 PCT seeds gave %d distinct schedules, want at least 5", len(distinct))
	}
}

// At depth 1 there are no change points: the highest-priority thread runs
// until it ends, so the CPU changes hands only when a thread exits (these
// threads never block).
func TestPCTDepthOneNoPreemption(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		if o, _ := yielders(PCT(seed, 1, 40), 3, 10); preemptions(o) != 0 {
			t.Errorf("seed %d: %d preemptions, want 0: %v", seed, preemptions(o), o)
		}
	}
	// depth 3 preempts somewhere over a few seeds
	more := false
	for seed := uint64(1); seed <= 10; seed++ {
		if o, _ := yielders(PCT(seed, 3, 30), 3, 10); preemptions(o) > 0 {
			more = true
		}
	}
	if !more {
		t.Error("depth 3 never preempted a running thread over 10 seeds")
	}
}

// Random(seed) is the scheduler's default: New(Deterministic, seed) and
// NewWith(Random(seed)) take the same interleaving.
func TestRandomIsDefault(t *testing.T) {
	a, _ := yielders(Random(9), 3, 10)
	s := New(Deterministic, 9, nil)
	var b []int32
	for range 3 {
		s.Go("y", func(t *Thread) {
			for range 10 {
				b = append(b, t.ID())
				t.Yield()
			}
		})
	}
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	if string(fmtIDs(a)) != string(fmtIDs(b)) {
		t.Fatalf("Random(9) %v, New(9) %v", a, b)
	}
}

// preemptions counts the switches in order away from a thread that runs
// again later.
func preemptions(order []int32) int {
	n := 0
	for i := 1; i < len(order); i++ {
		if order[i] != order[i-1] && slices.Contains(order[i:], order[i-1]) {
			n++
		}
	}
	return n
}

func fmtIDs(ids []int32) []byte {
	b := make([]byte, len(ids))
	for i, id := range ids {
		b[i] = byte('0' + id)
	}
	return b
}

// TestPCTSpinnersProgress: a thread that spins until another thread's
// work is done must not starve that thread under PCT, whatever the
// priorities, also along a chain (a waits for b, b for c). With Yield in
// place of Spin every seed that gives a waiter the higher priority runs
// forever; the step cap turns that into a failure here.
func TestPCTSpinnersProgress(t *testing.T) {
	for seed := uint64(1); seed <= 200; seed++ {
		s := NewWith(PCT(seed, 3, 50), nil)
		var bDone, cDone bool
		steps := 0
		spinUntil := func(th *Thread, done *bool) {
			for !*done {
				if steps++; steps > 100000 {
					panic("livelock")
				}
				th.Spin()
			}
		}
		s.Go("a", func(th *Thread) { spinUntil(th, &bDone) })
		s.Go("b", func(th *Thread) { spinUntil(th, &cDone); th.Yield(); bDone = true })
		s.Go("c", func(th *Thread) {
			for range 5 {
				th.Yield()
			}
			cDone = true
		})
		if err := s.Run(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}
