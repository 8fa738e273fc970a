package sched

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tdxsim/tdxsim/event"
)

// selfDeadlock is the report for t waiting for a lock it holds.
func (s *Scheduler) selfDeadlock(t *Thread, l *lockCore, mode accessMode) *DeadlockError {
	w := fmt.Sprintf("%s waits to %s %s held by %s", t, mode.verb(), l.describe(), t)
	return s.reportDeadlock(&DeadlockError{Step: t.stepNow(), Cycle: []string{w}, Blocked: []string{w}})
}

// reportDeadlock emits d as the sched.deadlock event and returns it.
func (s *Scheduler) reportDeadlock(d *DeadlockError) *DeadlockError {
	s.sink.Emit(event.Event{Kind: event.KindDeadlock, Step: d.Step, Thread: -1, Name: "sched.deadlock", Detail: d.Error()})
	return d
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
