// Package testkit is what the package tests share: the simulated host
// they run on (host memory, /dev/kvm, the counter every layer reports to,
// the deterministic scheduler) and the assertions they make on it (an
// ioctl's errno, the violations and lockdep reports a run raised).
//
// Only _test.go files import it; a test in this package checks that no
// other file does.
package testkit

import (
	"testing"

	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/sched"
)

// Config is the host a test asks for; the zero value is a 1 GiB host
// with empty hugetlb pools and the default KVM configuration.
type Config struct {
	Bytes  uint64      // host memory; 0: 1 GiB
	Huge2M int         // 2 MiB pages reserved for hugetlb
	Huge1G int         // 1 GiB pages reserved for hugetlb
	KVM    *kvm.Config // nil: kvm.DefaultConfig()
}

// Host is one simulated machine: host memory and /dev/kvm on it, both
// reporting to Events.
type Host struct {
	Mem    *hostmem.Memory
	KVM    *kvm.System
	Events *event.Counter
}

// NewHost builds the host cfg describes and fails tb if it cannot.
func NewHost(tb testing.TB, cfg Config) *Host {
	tb.Helper()
	if cfg.Bytes == 0 {
		cfg.Bytes = 1 << 30
	}
	kc := kvm.DefaultConfig()
	if cfg.KVM != nil {
		kc = *cfg.KVM
	}
	h := &Host{Events: event.NewCounter()}
	var err error
	if h.Mem, err = hostmem.New(hostmem.Config{Bytes: cfg.Bytes, Huge2M: cfg.Huge2M, Huge1G: cfg.Huge1G}, h.Events); err != nil {
		tb.Fatal(err)
	}
	h.KVM = kvm.NewSystem(kc, h.Mem, h.Events)
	return h
}

// Run runs fn as the thread "vmm" of the deterministic scheduler with
// seed, reporting to h's counter, and fails tb if the run ends in error
// (a deadlock, a panic); it returns the scheduler for its lockdep.
func (h *Host) Run(tb testing.TB, seed uint64, fn func(th *sched.Thread)) *sched.Scheduler {
	tb.Helper()
	return Run(tb, seed, h.Events, fn)
}

// Run runs fn as the thread "vmm" of the deterministic scheduler with
// seed, whose events go to sink (nil: none), and fails tb if the run ends
// in error; it returns the scheduler for its lockdep.
func Run(tb testing.TB, seed uint64, sink event.Sink, fn func(th *sched.Thread)) *sched.Scheduler {
	tb.Helper()
	s := sched.New(sched.Deterministic, seed, sink)
	s.Go("vmm", fn)
	if err := s.Run(); err != nil {
		tb.Fatalf("scheduler (seed %d): %v", seed, err)
	}
	return s
}

// Seeds is how many seeds (interleavings, random scripts) a seeded test
// runs: full, or short under go test -short.
func Seeds(full, short int) int {
	if testing.Short() {
		return short
	}
	return full
}
