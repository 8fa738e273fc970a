package fuzz

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/tdxsim/tdxsim/scenario"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// lockOrder is the kernel's order of the lock classes the model takes,
// outermost first (Kernel: Documentation/virt/kvm/locking.rst:
// kvm->slots_lock outside kvm->mmu_lock;
// virt/kvm/guest_memfd.c: filemap_invalidate_lock() outside KVM_MMU_LOCK,
// kvm_gmem_bind() and kvm_gmem_unbind() under slots_lock; Series:
// "[PATCH v4 ..] x86/virt/tdx: Add tdx_pamt_get()/tdx_pamt_put()" (Dynamic
// PAMT): the pamt_lock spinlock under mmu_lock). Every pair in this order
// is an edge a run may record; the campaign's lock-order coverage is how
// many of them it saw. vcpu.mutex is left out: the model creates it but
// no path takes it (KVM's vCPU ioctls run without it here), so no edge
// of it can exist.
var lockOrder = []string{"kvm.slots_lock", "mapping.invalidate_lock", "kvm.mmu_lock", "tdx.dpamt_lock"}

// lockEdges are the edges of lockOrder: every outer -> inner pair.
func lockEdges() []string {
	var out []string
	for i, a := range lockOrder {
		for _, b := range lockOrder[i+1:] {
			out = append(out, a+" -> "+b)
		}
	}
	return out
}

func transitionNames() []string {
	var out []string
	for _, t := range tdxmodule.Transitions() {
		out = append(out, t.String())
	}
	return out
}

// Coverage is what a campaign exercised, each out of what the model has:
// the S-EPT entry transitions (leaf, state before, state after) of
// tdxmodule.Transitions, the lock-order edges of the kernel's order
// (lockOrder), and the step kinds of the scenario registry. It depends
// only on the seeds run, not on the worker count.
type Coverage struct {
	Transitions Tally `json:"sept_transitions"`
	LockEdges   Tally `json:"lock_order_edges"`
	StepKinds   Tally `json:"step_kinds"`
}

// Tally is one coverage figure: Seen of Of, in the model's order;
// Missing what was not seen; Other what was seen outside the model's
// list (a lock-order edge against the kernel's order, which breaks
// lock_order; a transition the table does not list).
type Tally struct {
	Seen    []string `json:"seen"`
	Of      int      `json:"of"`
	Missing []string `json:"missing"`
	Other   []string `json:"other,omitempty"`
}

// coverSet accumulates a campaign's coverage.
type coverSet struct{ trans, locks, kinds map[string]bool }

func newCoverSet() *coverSet {
	return &coverSet{trans: map[string]bool{}, locks: map[string]bool{}, kinds: map[string]bool{}}
}

// add merges one run's coverage.
func (c *coverSet) add(f *scenario.File, cv *scenario.Coverage) {
	if f != nil {
		var walk func([]scenario.Step)
		walk = func(steps []scenario.Step) {
			for i := range steps {
				c.kinds[steps[i].Kind()] = true
				walk(steps[i].Members())
			}
		}
		walk(f.Timeline)
	}
	if cv == nil {
		return
	}
	for _, t := range cv.Transitions {
		c.trans[t.String()] = true
	}
	for _, e := range cv.LockEdges {
		c.locks[e] = true
	}
}

// addTally merges a shard's figure into c's set of that figure.
func addTally(set map[string]bool, t Tally) {
	for _, s := range t.Seen {
		set[s] = true
	}
	for _, s := range t.Other {
		set[s] = true
	}
}

func tally(seen map[string]bool, all []string) Tally {
	t := Tally{Seen: []string{}, Of: len(all), Missing: []string{}}
	known := map[string]bool{}
	for _, a := range all {
		known[a] = true
		if seen[a] {
			t.Seen = append(t.Seen, a)
		} else {
			t.Missing = append(t.Missing, a)
		}
	}
	for s := range seen {
		if !known[s] {
			t.Other = append(t.Other, s)
		}
	}
	slices.Sort(t.Other)
	return t
}

// summary is the set as the summary's figure.
func (c *coverSet) summary() Coverage {
	return Coverage{
		Transitions: tally(c.trans, transitionNames()),
		LockEdges:   tally(c.locks, lockEdges()),
		StepKinds:   tally(c.kinds, scenario.StepKinds()),
	}
}

// writeText prints the figure in three lines, with what is missing.
func (cv *Coverage) writeText(w io.Writer) {
	line := func(what string, t Tally) {
		fmt.Fprintf(w, "  %-24s %d of %d", what, len(t.Seen), t.Of)
		if len(t.Missing) > 0 && len(t.Missing) <= 8 {
			fmt.Fprintf(w, " (not: %s)", strings.Join(t.Missing, "; "))
		}
		if len(t.Other) > 0 {
			fmt.Fprintf(w, "; outside the model's list: %s", strings.Join(t.Other, "; "))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "coverage:")
	line("S-EPT transitions", cv.Transitions)
	line("lock-order edges", cv.LockEdges)
	line("step kinds", cv.StepKinds)
}
