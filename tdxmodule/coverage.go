package tdxmodule

import "github.com/tdxsim/tdxsim/addr"

// Transition is one Secure EPT entry state change a leaf makes: the
// leaf, the entry's state before and after (at the GPA and level the
// leaf names).
type Transition struct {
	Leaf     string
	From, To uint8
}

func (t Transition) String() string {
	return t.Leaf + ": " + SeptStateName(t.From) + " -> " + SeptStateName(t.To)
}

// transitions is every S-EPT entry transition the model's leaves make,
// by leaf (Module: tdh_mem_sept_add.c, tdh_mem_page_add.c,
// tdh_mem_page_aug.c, tdh_mem_range_block.c, tdh_mem_range_unblock.c,
// tdh_mem_page_remove.c, tdh_mem_sept_remove.c, tdh_mem_page_demote.c,
// tdh_mem_page_promote.c, tdg_mem_page_accept.c). The unblocked forms of
// REMOVE, SEPT.REMOVE, DEMOTE and PROMOTE are the TD not RUNNABLE (build,
// teardown), where the blocked-and-tracked prerequisite does not apply.
var transitions = []Transition{
	{"TDH.MEM.SEPT.ADD", SeptFree, SeptNLMapped},
	{"TDH.MEM.PAGE.ADD", SeptFree, SeptMapped},
	{"TDH.MEM.PAGE.AUG", SeptFree, SeptPending},
	{"TDH.MEM.RANGE.BLOCK", SeptNLMapped, SeptNLBlocked},
	{"TDH.MEM.RANGE.BLOCK", SeptMapped, SeptBlocked},
	{"TDH.MEM.RANGE.BLOCK", SeptPending, SeptPendingBlocked},
	{"TDH.MEM.RANGE.UNBLOCK", SeptNLBlocked, SeptNLMapped},
	{"TDH.MEM.RANGE.UNBLOCK", SeptBlocked, SeptMapped},
	{"TDH.MEM.RANGE.UNBLOCK", SeptPendingBlocked, SeptPending},
	{"TDH.MEM.PAGE.REMOVE", SeptBlocked, SeptFree},
	{"TDH.MEM.PAGE.REMOVE", SeptPendingBlocked, SeptFree},
	{"TDH.MEM.PAGE.REMOVE", SeptMapped, SeptFree},
	{"TDH.MEM.PAGE.REMOVE", SeptPending, SeptFree},
	{"TDH.MEM.SEPT.REMOVE", SeptNLBlocked, SeptFree},
	{"TDH.MEM.SEPT.REMOVE", SeptNLMapped, SeptFree},
	{"TDH.MEM.PAGE.DEMOTE", SeptBlocked, SeptNLMapped},
	{"TDH.MEM.PAGE.DEMOTE", SeptPendingBlocked, SeptNLMapped},
	{"TDH.MEM.PAGE.DEMOTE", SeptMapped, SeptNLMapped},
	{"TDH.MEM.PAGE.DEMOTE", SeptPending, SeptNLMapped},
	{"TDH.MEM.PAGE.PROMOTE", SeptNLBlocked, SeptMapped},
	{"TDH.MEM.PAGE.PROMOTE", SeptNLBlocked, SeptPending},
	{"TDH.MEM.PAGE.PROMOTE", SeptNLMapped, SeptMapped},
	{"TDH.MEM.PAGE.PROMOTE", SeptNLMapped, SeptPending},
	{"TDG.MEM.PAGE.ACCEPT", SeptPending, SeptMapped},
}

// Transitions returns every S-EPT entry transition the model's leaves
// make (the denominator of a campaign's transition coverage).
func Transitions() []Transition { return append([]Transition(nil), transitions...) }

// septLeaves are the host leaves that change the state of the entry
// their RCX (GPA|level) and RDX (TDR) name.
var septLeaves = map[Leaf]bool{
	LeafMemSEPTAdd: true, LeafMemPageAdd: true, LeafMemPageAug: true, LeafMemRangeBlock: true,
	LeafMemRangeUnblock: true, LeafMemPageRemove: true, LeafMemSEPTRemove: true,
	LeafMemPageDemote: true, LeafMemPagePromote: true,
}

// coverage is the transitions a module has made: one flag per (leaf slot,
// from, to), a fixed array whatever the TD size.
type coverage struct {
	seen [65][8][8]bool // leaf number, or 64 for TDG.MEM.PAGE.ACCEPT; state index
	// order lists the transitions in the order first made.
	order []Transition
}

// stateIndex packs the seven states into 0..6 (7: anything else).
func stateIndex(s uint8) int {
	switch s {
	case SeptFree:
		return 0
	case SeptNLMapped:
		return 1
	case SeptNLBlocked:
		return 2
	case SeptMapped:
		return 3
	case SeptBlocked:
		return 4
	case SeptPending:
		return 5
	case SeptPendingBlocked:
		return 6
	}
	return 7
}

func (c *coverage) note(slot int, name string, from, to uint8) {
	if from == to {
		return
	}
	p := &c.seen[slot][stateIndex(from)][stateIndex(to)]
	if !*p {
		*p = true
		c.order = append(c.order, Transition{name, from, to})
	}
}

// RecordTransitions makes the module record every S-EPT entry transition
// its leaves make from now on (TransitionsMade reads them). Off, the
// SEAMCALL path pays one nil check.
func (m *Module) RecordTransitions() {
	m.mu.Lock()
	if m.cov == nil {
		m.cov = &coverage{}
	}
	m.mu.Unlock()
}

// TransitionsMade returns the transitions recorded, each once, in the
// order first made.
func (m *Module) TransitionsMade() []Transition {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cov == nil {
		return nil
	}
	return append([]Transition(nil), m.cov.order...)
}

// entryState is the state of the entry a S-EPT leaf's operands name; ok
// is false when the walk does not reach that level (or no such TD). m.mu
// held.
func (m *Module) entryState(in Regs) (uint8, bool) {
	td := m.tds[addr.HPA(in.RDX&^0xfff).PFN()]
	if td == nil || td.root == nil {
		return 0, false
	}
	level := addr.Level(in.RCX & 7)
	if level > td.pwl {
		return 0, false
	}
	p, i, lvl := td.walk(addr.GPA(in.RCX&^0xfff&(1<<52-1)), level)
	if lvl != level {
		return 0, false
	}
	return p.e[i].state(), true
}

// recordAround runs f for a recorded S-EPT leaf and notes the transition
// it made. m.mu held.
func (m *Module) recordAround(leaf Leaf, f leafFunc, ls *lockset, in Regs) Regs {
	if !septLeaves[leaf] {
		return f(m, ls, in)
	}
	from, ok := m.entryState(in)
	out := f(m, ls, in)
	if ok && out.RAX == 0 {
		if to, ok := m.entryState(in); ok {
			m.cov.note(int(leaf), leaf.String(), from, to)
		}
	}
	return out
}

// acceptState is the state of the entry a guest ACCEPT names. m.mu held.
func (m *Module) acceptState(v *VCPU, rcx uint64) (uint8, bool) {
	if v.td == nil || v.td.root == nil {
		return 0, false
	}
	level := addr.Level(rcx & 7)
	if level > addr.Level2M {
		return 0, false
	}
	p, i, lvl := v.td.walk(addr.GPA(rcx&^0xfff&(1<<52-1)), level)
	if lvl != level {
		return 0, false
	}
	return p.e[i].state(), true
}
