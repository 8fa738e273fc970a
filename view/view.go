// Package view turns a TD's state into what a picture shows: its GPA
// space as one cell per 2 MiB (coloured by the state of the mappings in
// it), the 512 pages of one cell, and the Secure EPT walk of one GPA. It
// reads KVM's roots and the TDX module's S-EPT; it changes nothing. The
// SVG writer, `tdxsim serve` and the tests all use it.
package view

import (
	"slices"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// State is what a 2 MiB cell (or a 4 KiB page) holds.
type State byte

// Cell and page states, as the one-letter codes the JSON map uses.
const (
	Unmapped  State = '.' // nothing mapped
	Pending   State = 'p' // private, in the S-EPT but not yet accepted (PENDING)
	Private4K State = '4' // private, mapped by 4K leaves (some may be pending)
	Private2M State = '2' // private, one 2M leaf
	Private1G State = 'g' // private, part of a 1G leaf
	Blocked   State = 'b' // a private leaf BLOCKED (mid-removal or split)
	Shared    State = 's' // shared (direct root) only
	Mixed     State = 'm' // shared and private pages in one 2 MiB
)

// Legend lists every state with its name, in display order.
var Legend = []struct {
	State State
	Name  string
}{
	{Unmapped, "unmapped"}, {Pending, "private pending"}, {Private4K, "private mapped 4K"},
	{Private2M, "private mapped 2M"}, {Private1G, "private mapped 1G"}, {Blocked, "blocked"},
	{Shared, "shared"}, {Mixed, "shared and private"},
}

// Name returns the legend name of s.
func (s State) Name() string {
	for _, l := range Legend {
		if l.State == s {
			return l.Name
		}
	}
	return "unknown"
}

// Map is one TD's GPA space, a cell per 2 MiB from GPA 0.
type Map struct {
	TD    string `json:"td"`
	Bytes uint64 `json:"bytes"` // GPA space shown (the end of the last memslot)
	// Cells is one State per 2 MiB, as a string of their codes.
	Cells string `json:"cells"`
	// Counts is how many cells are in each state, by code.
	Counts map[string]int `json:"counts"`
}

// Latest folds snap into maps, keeping each TD's newest map (by name, in
// order of first appearance): fed every step's Snapshot, it ends with each
// TD as it was at its last step before teardown.
func Latest(maps, snap []Map) []Map {
	for _, m := range snap {
		i := slices.IndexFunc(maps, func(x Map) bool { return x.TD == m.TD })
		if i < 0 {
			maps = append(maps, m)
		} else {
			maps[i] = m
		}
	}
	return maps
}

// Snapshot maps every TD of w.
func Snapshot(w check.World) []Map {
	out := make([]Map, 0, len(w.TDs))
	for _, td := range w.TDs {
		out = append(out, TDMap(w.Host.Mod, td))
	}
	return out
}

// cellCounts tallies one 2 MiB cell's pages.
type cellCounts struct {
	private4K, pending, blocked, shared uint16
	huge                                State
}

// TDMap is the map of one TD.
func TDMap(mod *tdxmodule.Module, td check.TD) Map {
	end := uint64(0)
	for _, s := range td.VM.Slots() {
		end = max(end, uint64(s.BaseGFN()+addr.GFN(s.NPages()))<<addr.PageShift)
	}
	n := int((end + addr.Size2M - 1) / addr.Size2M)
	cells := make([]cellCounts, n)
	mod.SEPTLeaves(td.TD.TDR(), func(l tdxmodule.SEPTLeaf) bool {
		first := int(uint64(l.GPA) / addr.Size2M)
		if first >= n {
			return true
		}
		blocked := l.State == tdxmodule.SeptBlocked || l.State == tdxmodule.SeptPendingBlocked
		pending := l.State == tdxmodule.SeptPending || l.State == tdxmodule.SeptPendingBlocked
		switch l.Level {
		case addr.Level4K:
			c := &cells[first]
			switch {
			case blocked:
				c.blocked++
			case pending:
				c.pending++
			default:
				c.private4K++
			}
		default:
			st := Private2M
			if l.Level >= addr.Level1G {
				st = Private1G
			}
			if pending {
				st = Pending
			}
			if blocked {
				st = Blocked
			}
			cellsIn := int(l.Level.Pages() / 512)
			for i := first; i < min(first+cellsIn, n); i++ {
				cells[i].huge = st
			}
		}
		return true
	})
	shared := td.VM.SharedBit()
	td.TD.MMU().Leaves(mmu.DirectRoot, func(l mmu.Leaf) bool {
		gpa := uint64(l.GFN&^shared) << addr.PageShift
		for p := uint64(0); p < l.Level.Pages(); p += 512 {
			if i := int((gpa + p<<addr.PageShift) / addr.Size2M); i < n {
				cells[i].shared += uint16(min(l.Level.Pages(), 512))
			}
		}
		return true
	})
	b := make([]byte, n)
	m := Map{TD: td.Name, Bytes: end, Counts: map[string]int{}}
	for i, c := range cells {
		b[i] = byte(c.state())
		m.Counts[string(b[i])]++
	}
	m.Cells = string(b)
	return m
}

func (c cellCounts) state() State {
	private := c.private4K + c.pending + c.blocked
	switch {
	case c.huge != 0:
		return c.huge
	case c.shared > 0 && private > 0:
		return Mixed
	case c.shared > 0:
		return Shared
	case c.blocked > 0:
		return Blocked
	case c.private4K > 0:
		return Private4K
	case c.pending > 0:
		return Pending
	}
	return Unmapped
}

// Page is one 4 KiB page of a cell.
type Page struct {
	GPA   uint64 `json:"gpa"`
	State string `json:"state"` // a State code
	Level string `json:"level,omitempty"`
	HPA   uint64 `json:"hpa,omitempty"`
	SEPT  string `json:"sept,omitempty"` // the S-EPT entry state
}

// CellPages returns the 512 pages of the 2 MiB cell holding gpa.
func CellPages(mod *tdxmodule.Module, td check.TD, gpa uint64) []Page {
	base := gpa &^ (addr.Size2M - 1)
	pages := make([]Page, 512)
	for i := range pages {
		pages[i] = Page{GPA: base + uint64(i)<<addr.PageShift, State: string(Unmapped)}
	}
	shared := td.VM.SharedBit()
	for i := range pages {
		p := &pages[i]
		gfn := addr.GPA(p.GPA).GFN()
		if l, ok := td.TD.MMU().Lookup(mmu.DirectRoot, gfn|shared); ok {
			p.State, p.Level, p.HPA = string(Shared), l.Level.String(), uint64((l.PFN + addr.PFN(gfn-(l.GFN&^shared))).HPA())
			continue
		}
		e, ok := mod.Lookup(td.TD.TDR(), addr.GPA(p.GPA))
		if !ok {
			continue
		}
		switch e.State {
		case tdxmodule.SeptMapped:
			p.State = string(map[addr.Level]State{addr.Level4K: Private4K, addr.Level2M: Private2M}[e.Level])
			if e.Level >= addr.Level1G {
				p.State = string(Private1G)
			}
		case tdxmodule.SeptPending:
			p.State = string(Pending)
		case tdxmodule.SeptBlocked, tdxmodule.SeptPendingBlocked:
			p.State = string(Blocked)
		default:
			continue // FREE or a non-leaf: nothing mapped here
		}
		p.Level, p.SEPT = e.Level.String(), tdxmodule.SeptStateName(e.State)
		p.HPA = uint64(e.HPA) + (p.GPA & (e.Level.Pages()<<addr.PageShift - 1))
	}
	return pages
}

// SEPTStep is one level of a Secure EPT walk, for display.
type SEPTStep struct {
	Level string `json:"level"` // what an entry at this level maps: 512G, 1G, 2M, 4K
	Index int    `json:"index"`
	Page  uint64 `json:"page"` // HPA of the S-EPT page holding the entry
	State string `json:"state"`
	HPA   uint64 `json:"hpa"`
	Leaf  bool   `json:"leaf"`
}

// SEPTPath is the walk of gpa through td's Secure EPT, root first.
func SEPTPath(mod *tdxmodule.Module, td check.TD, gpa uint64) []SEPTStep {
	var out []SEPTStep
	for _, s := range mod.SEPTPath(td.TD.TDR(), addr.GPA(gpa)) {
		out = append(out, SEPTStep{Level: s.Level.String(), Index: s.Index, Page: uint64(s.Page),
			State: tdxmodule.SeptStateName(s.State), HPA: uint64(s.HPA),
			Leaf: s.State != tdxmodule.SeptNLMapped && s.State != tdxmodule.SeptNLBlocked && s.State != tdxmodule.SeptFree})
	}
	return out
}
