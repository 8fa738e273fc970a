package tdxmodule

import "github.com/tdxsim/tdxsim/addr"

// This file is the checker's read-only view of the module's private state:
// what an invariant needs to compare the module with KVM, guest_memfd and
// the host allocator, and the vCPU lookup guest-side calls need. Nothing
// here is a SEAMCALL; nothing changes state. (The host's SEAMCALL wrappers
// are package tdxcall's.)

// SEPTLeaf is one leaf entry of a TD's Secure EPT (MAPPED, PENDING or one
// of their BLOCKED forms).
type SEPTLeaf struct {
	GPA addr.GPA
	SEPTEntry
}

// SEPTLeaves calls fn for every leaf of tdr's Secure EPT in GPA order,
// until fn returns false. The leaves are copied out under the module's
// lock (a compact array, 24 bytes a leaf) and fn runs without it, so fn
// may query the module.
func (m *Module) SEPTLeaves(tdr addr.PFN, fn func(SEPTLeaf) bool) {
	m.mu.Lock()
	td := m.tds[tdr]
	var leaves []SEPTLeaf
	if td != nil && td.root != nil {
		walkSEPT(td.root, 0, func(l SEPTLeaf) bool {
			leaves = append(leaves, l)
			return true
		})
	}
	m.mu.Unlock()
	for _, l := range leaves {
		if !fn(l) {
			return
		}
	}
}

func walkSEPT(p *septPage, base addr.GPA, fn func(SEPTLeaf) bool) bool {
	span := addr.GPA(p.level.Pages()) << addr.PageShift
	for i := range p.e {
		e := p.e[i]
		s := e.state()
		gpa := base + addr.GPA(i)*span
		switch {
		case isLeafState(s):
			if !fn(SEPTLeaf{GPA: gpa, SEPTEntry: SEPTEntry{Level: p.level, State: s, HPA: e.hpa()}}) {
				return false
			}
		case s != SeptFree && p.children != nil && p.children[i] != nil:
			if !walkSEPT(p.children[i], gpa, fn) {
				return false
			}
		}
	}
	return true
}

// PAMTPage is what the PAMT says of one physical page: its type, the
// size it is assigned at, and the owning TD's TDR (zero for none).
type PAMTPage struct {
	Type  uint8
	Level addr.Level
	Owner addr.PFN
}

// PAMTOf returns the PAMT's view of pfn.
func (m *Module) PAMTOf(pfn addr.PFN) PAMTPage {
	m.mu.Lock()
	defer m.mu.Unlock()
	if pfn >= m.memPages {
		return PAMTPage{}
	}
	e, lvl := m.leaf(pfn)
	pg := PAMTPage{Type: e.pt, Level: lvl}
	if e.pt != PTNDA && int(e.owner) < len(m.byID) && m.byID[e.owner] != nil {
		pg.Owner = m.byID[e.owner].tdr
	}
	return pg
}

// SEPTStep is one level of a GPA's walk through a Secure EPT: the entry
// at that level (its state and the HPA it holds: an S-EPT page for a
// non-leaf, the page for a leaf) and the HPA of the S-EPT page holding it.
type SEPTStep struct {
	Level addr.Level
	Index int
	Page  addr.HPA // the S-EPT page the entry is in
	SEPTEntry
}

// SEPTPath returns the walk of gpa through tdr's Secure EPT from the root
// down to the leaf or the first entry that is not NL_MAPPED (what
// TDH.MEM.SEPT.RD would read level by level); nil when tdr has no S-EPT.
func (m *Module) SEPTPath(tdr addr.PFN, gpa addr.GPA) []SEPTStep {
	m.mu.Lock()
	defer m.mu.Unlock()
	td := m.tds[tdr]
	if td == nil || td.root == nil {
		return nil
	}
	var out []SEPTStep
	for p := td.root; p != nil; {
		i := indexAt(gpa, p.level)
		e := p.e[i]
		out = append(out, SEPTStep{Level: p.level, Index: i, Page: p.hpa,
			SEPTEntry: SEPTEntry{Level: p.level, State: e.state(), HPA: e.hpa()}})
		if e.state() != SeptNLMapped && e.state() != SeptNLBlocked || p.children == nil {
			break
		}
		p = p.children[i]
	}
	return out
}

// HeldPages counts the 4 KiB pages the module holds for TDs (PAMT-assigned
// as a TD's TDR, TDCX, TDVPR, S-EPT or private page) and the Dynamic PAMT
// page pairs it holds: after a teardown that KVM could not finish (an HKID
// or a page it had to leak), what is left on purpose.
func (m *Module) HeldPages() uint64 {
	var n uint64
	m.mu.Lock()
	pages, pairs := m.memPages, m.pairs
	m.mu.Unlock()
	for base := addr.PFN(0); base < pages; {
		o := addr.Order(18)
		for base+addr.PFN(1)<<o > pages {
			o--
		}
		// eachPAMTLeaf calls once per entry, or once per page where a
		// huge entry is split into Dynamic PAMT pages: an entry covers
		// the pages up to the next call.
		held, from := false, base
		_ = m.eachPAMTLeaf(base, o, func(p addr.PFN, e *pamtEnt, _ addr.Level) error {
			if held {
				n += uint64(p - from)
			}
			held, from = e.pt != PTNDA && e.pt != PTRSVD && e.pt != PTPAMT, p
			return nil
		})
		base += addr.PFN(1) << o
		if held {
			n += uint64(base - from)
		}
	}
	return n + 2*pairs
}

// VCPU returns the vCPU whose TDVPR is tdvpr, for guest-side calls.
func (m *Module) VCPU(tdvpr addr.PFN) *VCPU {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.vcpus[tdvpr]
}

// TDInfo is a read-only view of a TD's control state, for checks and reports.
type TDInfo struct {
	ID         uint16
	HKID       int
	Lifecycle  uint8
	OpState    uint8
	ChildCount uint64
	Epoch      uint64
	SEPTPages  int
	VCPUs      int
	MRTD       []byte // set at MR.FINALIZE
}

// TD returns the state of the TD whose TDR is tdr.
func (m *Module) TD(tdr addr.PFN) (TDInfo, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	td := m.tds[tdr]
	if td == nil {
		return TDInfo{}, false
	}
	return TDInfo{ID: td.id, HKID: td.hkid, Lifecycle: td.lifecycle, OpState: td.opState, ChildCount: td.chldcnt,
		Epoch: td.epoch, SEPTPages: td.septPages, VCPUs: len(td.vcpus), MRTD: append([]byte(nil), td.finalMRTD...)}, true
}

// SEPTEntry is a read-only view of one Secure EPT entry.
type SEPTEntry struct {
	Level addr.Level
	State uint8
	HPA   addr.HPA
}

// Lookup returns the entry the Secure EPT walk for gpa ends on (the leaf,
// or where it stopped), without locks: a checker's view.
func (m *Module) Lookup(tdr addr.PFN, gpa addr.GPA) (SEPTEntry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	td := m.tds[tdr]
	if td == nil || td.root == nil {
		return SEPTEntry{}, false
	}
	p, i, lvl := td.walk(gpa, 0)
	return SEPTEntry{Level: lvl, State: p.e[i].state(), HPA: p.e[i].hpa()}, true
}
