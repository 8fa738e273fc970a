package sched

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// trace runs three threads that interleave on a mutex and returns the order
// in which they passed their steps.
func trace(seed uint64) string {
	s := New(Deterministic, seed, nil)
	m := NewMutex("m")
	var log []string
	for i := 0; i < 3; i++ {
		s.Go(fmt.Sprintf("w%d", i), func(t *Thread) {
			for j := 0; j < 4; j++ {
				m.Lock(t)
				log = append(log, fmt.Sprintf("%d.%d", i, j))
				m.Unlock(t)
				t.Yield()
			}
		})
	}
	if err := s.Run(); err != nil {
		panic(err)
	}
	return strings.Join(log, " ")
}

func TestDeterministicSameSeedSameInterleaving(t *testing.T) {
	distinct := map[string]bool{}
	for seed := uint64(0); seed < 20; seed++ {
		a, b := trace(seed), trace(seed)
		if a != b {
			t.Fatalf("seed %d: two runs differ:\n%s\n%s", seed, a, b)
		}
		distinct[a] = true
	}
	if len(distinct) < 5 {
		t.Fatalf("20 seeds gave only %d interleavings; the PRNG is not steering", len(distinct))
	}
}

func TestABBADeadlockReportsCycle(t *testing.T) {
	found := false
	for seed := uint64(0); seed < 50 && !found; seed++ {
		s := New(Deterministic, seed, nil)
		a, b := NewMutex("A"), NewMutex("B")
		s.Go("t1", func(t *Thread) { a.Lock(t); t.Yield(); b.Lock(t); b.Unlock(t); a.Unlock(t) })
		s.Go("t2", func(t *Thread) { b.Lock(t); t.Yield(); a.Lock(t); a.Unlock(t); b.Unlock(t) })
		err := s.Run()
		var d *DeadlockError
		if errors.As(err, &d) {
			found = true
			if len(d.Cycle) != 2 {
				t.Fatalf("cycle %v, want two edges", d.Cycle)
			}
			msg := d.Error()
			for _, want := range []string{`mutex "A"`, `mutex "B"`, "t1[0]", "t2[1]"} {
				if !strings.Contains(msg, want) {
					t.Errorf("deadlock report %q lacks %q", msg, want)
				}
			}
		} else if err != nil {
			t.Fatal(err)
		}
		// Whether or not this seed hung, lockdep saw both orders.
		if r := s.LockDep().Reports(); len(r) == 0 || r[0].Rule != "lockdep.abba" {
			t.Fatalf("seed %d: lockdep reports %v, want lockdep.abba", seed, r)
		}
	}
	if !found {
		t.Fatal("no seed out of 50 hit the ABBA deadlock")
	}
}

func TestLockDepABBAWithoutHang(t *testing.T) {
	s := New(Deterministic, 1, nil)
	a, b := NewRWSem("filemap_invalidate_lock"), NewMutex("slots_lock")
	done := NewMutex("seq")
	// Run the two orders one after the other: no hang is possible.
	s.Go("populate", func(t *Thread) {
		done.Lock(t)
		a.Lock(t)
		b.Lock(t)
		b.Unlock(t)
		a.Unlock(t)
		done.Unlock(t)
		done.Lock(t)
		b.Lock(t)
		a.RLock(t)
		a.RUnlock(t)
		b.Unlock(t)
		done.Unlock(t)
	})
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	r := s.LockDep().Reports()
	if len(r) != 1 || r[0].Rule != "lockdep.abba" {
		t.Fatalf("reports %v, want one lockdep.abba", r)
	}
	if !strings.Contains(r[0].Detail, "slots_lock then filemap_invalidate_lock") {
		t.Errorf("detail %q does not name the new edge", r[0].Detail)
	}
}

func TestRWSemReadInsideWriteIsReportedAndDeadlocks(t *testing.T) {
	s := New(Deterministic, 7, nil)
	sem := NewRWSem("filemap_invalidate_lock")
	s.Go("gmem_populate", func(t *Thread) {
		sem.Lock(t)
		sem.RLock(t) // kvm_gmem_get_pfn inside kvm_gmem_populate
		sem.RUnlock(t)
		sem.Unlock(t)
	})
	err := s.Run()
	var d *DeadlockError
	if !errors.As(err, &d) {
		t.Fatalf("Run = %v, want a deadlock (the thread waits on itself)", err)
	}
	if len(d.Cycle) != 1 || !strings.Contains(d.Cycle[0], "gmem_populate[0] waits to read-lock") {
		t.Fatalf("cycle %v", d.Cycle)
	}
	r := s.LockDep().Reports()
	if len(r) == 0 || r[0].Rule != "lockdep.rwsem-read-in-write" {
		t.Fatalf("reports %v, want lockdep.rwsem-read-in-write", r)
	}
}

// The parallel scheduler cannot find a deadlock by seeing every thread
// blocked, but a thread waiting for a lock it holds itself ends the run
// with the same report instead of hanging; the other threads stop at their
// next lock or yield.
func TestParallelSelfDeadlockEndsTheRun(t *testing.T) {
	s := New(Parallel, 0, nil)
	sem := NewRWSem("filemap_invalidate_lock")
	other := NewMutex("other")
	s.Go("gmem_populate", func(t *Thread) {
		sem.Lock(t)
		sem.RLock(t) // kvm_gmem_get_pfn inside kvm_gmem_populate
		panic("unreachable: the read lock was granted inside the write lock")
	})
	s.Go("bystander", func(t *Thread) {
		for {
			other.Lock(t)
			other.Unlock(t)
		}
	})
	err := s.Run()
	var d *DeadlockError
	if !errors.As(err, &d) || len(d.Cycle) != 1 || !strings.Contains(d.Cycle[0], "gmem_populate[0] waits to read-lock") {
		t.Fatalf("Run = %v, want the self-deadlock", err)
	}
}

func TestSleepUnderSpinlockAndMMULock(t *testing.T) {
	s := New(Deterministic, 3, nil)
	spin := NewSpinLock("dpamt_lock")
	mmu := NewRWLock("mmu_lock")
	m := NewMutex("slots_lock")
	s.Go("fault", func(t *Thread) {
		spin.Lock(t)
		t.MightSleep("alloc_page(GFP_KERNEL)")
		spin.Unlock(t)
		mmu.RLock(t)
		m.Lock(t) // a sleeping lock under read mmu_lock
		m.Unlock(t)
		mmu.RUnlock(t)
		t.MightSleep("alloc_page(GFP_KERNEL) outside any lock: fine")
	})
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	r := s.LockDep().Reports()
	if len(r) != 2 {
		t.Fatalf("reports %v, want two sleep-in-atomic", r)
	}
	for _, rep := range r {
		if rep.Rule != "lockdep.sleep-in-atomic" {
			t.Errorf("rule %s", rep.Rule)
		}
	}
	if !strings.Contains(r[0].Detail, "dpamt_lock") || !strings.Contains(r[1].Detail, "mmu_lock") {
		t.Errorf("details %q / %q", r[0].Detail, r[1].Detail)
	}
}

func TestRWLockReadersShareWriterExcludes(t *testing.T) {
	s := New(Deterministic, 11, nil)
	mmu := NewRWLock("mmu_lock")
	inside, maxInside, writerSawReaders := 0, 0, false
	for i := 0; i < 4; i++ {
		s.Go(fmt.Sprintf("vcpu%d", i), func(t *Thread) {
			for j := 0; j < 5; j++ {
				mmu.RLock(t)
				inside++
				maxInside = max(maxInside, inside)
				t.Yield()
				inside--
				mmu.RUnlock(t)
			}
		})
	}
	s.Go("zap", func(t *Thread) {
		for j := 0; j < 5; j++ {
			mmu.Lock(t)
			writerSawReaders = writerSawReaders || inside != 0
			t.Yield()
			mmu.Unlock(t)
		}
	})
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	if writerSawReaders {
		t.Fatal("writer held mmu_lock while readers were inside")
	}
	if maxInside < 2 {
		t.Fatalf("readers never overlapped (max %d)", maxInside)
	}
}

func TestWaitUntilNeverTrueIsDeadlock(t *testing.T) {
	s := New(Deterministic, 5, nil)
	refcount := 2 // a pin that is never dropped
	s.Go("convert", func(t *Thread) {
		t.WaitUntil("folio refcount == 1", func() bool { return refcount == 1 })
	})
	err := s.Run()
	var d *DeadlockError
	if !errors.As(err, &d) || !strings.Contains(d.Error(), "waits until folio refcount == 1") {
		t.Fatalf("Run = %v", err)
	}
}

func TestWaitUntilWakesWhenConditionHolds(t *testing.T) {
	s := New(Deterministic, 5, nil)
	refcount := 2
	s.Go("convert", func(t *Thread) {
		t.WaitUntil("folio refcount == 1", func() bool { return refcount == 1 })
	})
	s.Go("unpin", func(t *Thread) { t.Yield(); refcount = 1 })
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
}

func TestPanicInThreadIsReturned(t *testing.T) {
	s := New(Deterministic, 1, nil)
	s.Go("bad", func(t *Thread) { panic("boom") })
	s.Go("other", func(t *Thread) { t.Yield() })
	var p *PanicError
	if err := s.Run(); !errors.As(err, &p) || p.Value != "boom" {
		t.Fatalf("Run = %v", err)
	}
}

func TestThreadsSpawnedDuringRun(t *testing.T) {
	for _, mode := range []Mode{Deterministic, Parallel} {
		s := New(mode, 2, nil)
		n := 0
		m := NewMutex("counter")
		s.Go("parent", func(t *Thread) {
			for i := 0; i < 3; i++ {
				t.Go("child", func(t *Thread) { m.Lock(t); n++; m.Unlock(t) })
			}
		})
		if err := s.Run(); err != nil {
			t.Fatal(err)
		}
		if n != 3 {
			t.Fatalf("%s: n = %d", mode, n)
		}
	}
}

// TestParallelLocks is meant for go test -race: real goroutines contend.
func TestParallelLocks(t *testing.T) {
	s := New(Parallel, 0, nil)
	mmu := NewRWLock("mmu_lock")
	sem := NewRWSem("filemap_invalidate_lock")
	counter, readers := 0, 0
	for i := 0; i < 8; i++ {
		s.Go("w", func(t *Thread) {
			for j := 0; j < 200; j++ {
				if j%4 == 0 {
					mmu.Lock(t)
					counter++
					mmu.Unlock(t)
				} else {
					sem.RLock(t)
					mmu.RLock(t)
					_ = counter
					mmu.RUnlock(t)
					sem.RUnlock(t)
				}
			}
			sem.Lock(t)
			readers++
			sem.Unlock(t)
		})
	}
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	if counter != 8*50 || readers != 8 {
		t.Fatalf("counter %d readers %d", counter, readers)
	}
	if r := s.LockDep().Reports(); len(r) != 0 {
		t.Fatalf("unexpected reports %v", r)
	}
}

func BenchmarkDeterministicSwitch(b *testing.B) {
	s := New(Deterministic, 1, nil)
	per := b.N/2 + 1
	for i := 0; i < 2; i++ {
		s.Go("t", func(t *Thread) {
			for j := 0; j < per; j++ {
				t.Yield()
			}
		})
	}
	b.ResetTimer()
	if err := s.Run(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(s.Switches())/float64(b.N), "switches/op")
}

// The parallel scheduler counts steps per thread and adds them in
// batches; once Run returns its count is the deterministic one, which
// does not depend on the interleaving (every lock operation and yield is
// one step).
func TestParallelStepsMatchDeterministic(t *testing.T) {
	steps := func(mode Mode) uint64 {
		s := New(mode, 3, nil)
		m := NewMutex("m")
		for i := 0; i < 4; i++ {
			s.Go("w", func(t *Thread) {
				for j := 0; j < 100+i; j++ {
					m.Lock(t)
					m.Unlock(t)
					t.Yield()
				}
			})
		}
		if err := s.Run(); err != nil {
			t.Fatal(err)
		}
		return s.Steps()
	}
	if d, p := steps(Deterministic), steps(Parallel); d != p || d != 3*(400+6) {
		t.Fatalf("deterministic %d steps, parallel %d, want %d", d, p, 3*(400+6))
	}
}
