package testkit

import (
	"errors"
	"slices"
	"testing"

	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/sched"
)

// WantErrno fails tb unless err carries want (0: success) and, for a
// failure, wraps it so errors.Is finds it.
func WantErrno(tb testing.TB, what string, err error, want errno.Errno) {
	tb.Helper()
	if got := errno.Of(err); got != want {
		tb.Errorf("%s: got %v (%v), want %v", what, got, err, want)
	}
	if want != 0 && !errors.Is(err, want) {
		tb.Errorf("%s: error %v does not wrap %v", what, err, want)
	}
}

// Reported counts the violations of rule c has seen.
func Reported(c *event.Counter, rule string) int {
	n := 0
	for _, v := range c.Violations() {
		if v.Name == rule {
			n++
		}
	}
	return n
}

// ExpectViolations fails tb on every violation c has seen whose rule is
// not one of expected, and returns how many it saw of each expected rule.
func ExpectViolations(tb testing.TB, c *event.Counter, expected ...string) map[string]int {
	tb.Helper()
	n := map[string]int{}
	for _, v := range c.Violations() {
		if !slices.Contains(expected, v.Name) {
			tb.Errorf("violation %s: %s", v.Name, v.Detail)
			continue
		}
		n[v.Name]++
	}
	return n
}

// NoViolations fails tb on every violation c has seen.
func NoViolations(tb testing.TB, c *event.Counter) {
	tb.Helper()
	ExpectViolations(tb, c)
}

// NoLockdep fails tb on every lockdep report of s.
func NoLockdep(tb testing.TB, s *sched.Scheduler) {
	tb.Helper()
	for _, r := range s.LockDep().Reports() {
		tb.Errorf("lockdep: %v", r)
	}
}

// Lockdep counts the lockdep reports of rule s has made.
func Lockdep(s *sched.Scheduler, rule string) int {
	n := 0
	for _, r := range s.LockDep().Reports() {
		if r.Rule == rule {
			n++
		}
	}
	return n
}
