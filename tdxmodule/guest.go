package tdxmodule

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/sched"
)

// ExitKind says what a guest operation produced.
type ExitKind uint8

// Outcomes of a guest TDCALL or access.
const (
	ExitNone         ExitKind = iota // completed in the guest; see the status
	ExitEPTViolation                 // TD exit to KVM: EPT violation
	ExitVE                           // #VE injected into the guest
	// ExitInterrupt: a TD exit for an external interrupt in the middle of
	// a 2M TDG.MEM.PAGE.ACCEPT. The guest's RIP stays on the TDCALL, so
	// on re-entry it runs again and resumes from the entry's accept
	// counter (Module: tdg_mem_page_accept.c, interrupt_occurred).
	ExitInterrupt
)

func (k ExitKind) String() string {
	return [...]string{"none", "ept-violation", "#VE", "interrupt"}[k]
}

// Extended exit qualification types (§4.6).
const (
	ExtQualNone           = 0
	ExtQualAccept         = 1 // EPT violation raised by TDG.MEM.PAGE.ACCEPT
	ExtQualPendingViolate = 6 // guest access to a PENDING page with #VE disabled
)

// Exit is the result of a guest operation: a status for the guest, or a TD
// exit KVM must handle (with the accept level it carries).
type Exit struct {
	Kind     ExitKind
	Status   Status // TDCALL status in guest RAX when Kind == ExitNone
	GPA      addr.GPA
	ExtQual  uint8      // ExtQualAccept / ExtQualPendingViolate
	ReqLevel addr.Level // ACCEPT: the level the guest asked for
	ErrLevel addr.Level // the level where the walk stopped
	State    uint64     // public SEPT state of that entry
}

// Accept is TDG.MEM.PAGE.ACCEPT (TDCALL 6) by a vCPU inside its TD: RCX =
// GPA|level (0 or 1; 1G accept is OPERAND_INVALID in 1.5). It follows the
// module's decision procedure (tdg_mem_page_accept.c, §4.6): a PENDING leaf
// of the requested size is zeroed and becomes MAPPED; an accessible leaf
// gives PAGE_ALREADY_ACCEPTED; a non-leaf at the requested level gives
// PAGE_SIZE_MISMATCH; anything else (FREE, blocked, a larger PENDING leaf, a
// missing S-EPT page) is an EPT-violation exit carrying the accept level,
// which is how the guest asks KVM to AUG or to split. The zeroing writes
// tag 0 into host memory. 2M accept is not interrupted in the model.
func (m *Module) Accept(t *sched.Thread, v *VCPU, rcx uint64) Exit {
	m.mu.Lock()
	var from uint8
	var known bool
	if m.cov != nil {
		from, known = m.acceptState(v, rcx)
	}
	x := m.accept(v, rcx)
	if known && x.Kind == ExitNone && x.Status == Success {
		if to, ok := m.acceptState(v, rcx); ok {
			m.cov.note(64, "TDG.MEM.PAGE.ACCEPT", from, to)
		}
	}
	m.mu.Unlock()
	ev := event.Event{Kind: event.KindTdcall, Leaf: uint16(TdcallMemPageAccept), Name: "TDG.MEM.PAGE.ACCEPT",
		Status: uint64(x.Status), Args: [4]uint64{rcx}}
	if x.Kind != ExitNone {
		ev.Detail = x.Kind.String()
	} else if x.Status != Success {
		ev.Detail = x.Status.String()
	}
	t.Stamp(&ev)
	m.sink.Emit(ev)
	return x
}

func (m *Module) accept(v *VCPU, rcx uint64) Exit {
	if !v.inside {
		return Exit{Status: VCPUStateIncorrect}
	}
	td := v.td
	gpa, req, st := td.pageInfo(rcx, 0, addr.Level2M)
	if st != Success {
		return Exit{Status: st}
	}
	p, i, lvl := td.walk(gpa, req)
	e := p.e[i]
	violation := Exit{Kind: ExitEPTViolation, GPA: gpa, ExtQual: ExtQualAccept, ReqLevel: req,
		ErrLevel: lvl, State: publicState(e.state())}
	if lvl != req {
		if e.state() == SeptMapped {
			return Exit{Status: PageAlreadyAccepted.With(uint32(lvl))}
		}
		return violation
	}
	if e.locked() {
		return Exit{Status: OperandBusy.With(OpRCX)}
	}
	switch s := e.state(); {
	case s == SeptNLMapped || s == SeptNLBlocked:
		return Exit{Status: PageSizeMismatch.With(uint32(lvl))}
	case s == SeptMapped:
		return Exit{Status: PageAlreadyAccepted.With(uint32(lvl))}
	case s != SeptPending:
		return violation
	}
	if req == addr.Level2M && (v.irqAfter > 0 || e.acceptCount() > 0) {
		return m.accept2MResumable(v, p, i, e, gpa)
	}
	// Zero the page(s) with the TD key, then PENDING → MAPPED.
	if err := m.mem.FillTag(nil, e.hpa().PFN(), req.Order(), 0); err != nil {
		return Exit{Status: OperandInvalid.With(OpRCX)}
	}
	p.e[i] = e.withState(SeptMapped).withCount(0)
	return Exit{Status: Success}
}

// accept2MResumable is the 2M loop of tdg_mem_page_accept.c page by page:
// it zeroes from the entry's accept counter on and, after each page but
// the last, polls is_interrupt_pending_guest_side() (here: the interrupt
// PendGuestInterrupt scheduled). Interrupted, the entry stays PENDING with
// the counter saved and the vCPU exits; the re-executed TDCALL resumes.
func (m *Module) accept2MResumable(v *VCPU, p *septPage, i int, e septEntry, gpa addr.GPA) Exit {
	base := e.hpa().PFN()
	for n := e.acceptCount(); ; n++ {
		if err := m.mem.FillTag(nil, base+addr.PFN(n), 0, 0); err != nil {
			return Exit{Status: OperandInvalid.With(OpRCX)}
		}
		if n == 511 {
			break
		}
		if v.irqAfter > 0 {
			if v.irqAfter--; v.irqAfter == 0 {
				p.e[i] = e.withCount(n + 1)
				return Exit{Kind: ExitInterrupt, GPA: gpa}
			}
		}
	}
	p.e[i] = e.withState(SeptMapped).withCount(0)
	return Exit{Status: Success}
}

// PendGuestInterrupt schedules an external interrupt for v: a 2M accept
// sees it pending after pages more 4K pages zeroed (0 cancels).
func (m *Module) PendGuestInterrupt(v *VCPU, pages uint) {
	m.mu.Lock()
	v.irqAfter = pages
	m.mu.Unlock()
}

// Access is a guest load or store to a private GPA: nil exit when the page
// is MAPPED; a #VE when it is PENDING (unless the TD disabled it, then a TD
// exit of type PENDING_EPT_VIOLATION); an EPT-violation TD exit for FREE,
// blocked or unmapped (§4.6). A store writes tag into host memory.
func (m *Module) Access(t *sched.Thread, v *VCPU, gpa addr.GPA, write bool, tag hostmem.Tag, veDisabled bool) (Exit, hostmem.Tag) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !v.inside {
		return Exit{Status: VCPUStateIncorrect}, 0
	}
	td := v.td
	p, i, lvl := td.walk(gpa, 0)
	e := p.e[i]
	switch e.state() {
	case SeptMapped: // the walk stops at a leaf, so this is the mapping
		off := uint64(gpa) & (lvl.Bytes() - 1)
		pfn := e.hpa().PFN() + addr.PFN(off>>12)
		if write {
			if err := m.mem.SetTag(t, pfn, tag); err != nil {
				return Exit{Status: OperandInvalid}, 0
			}
			return Exit{}, tag
		}
		return Exit{}, m.mem.Tag(pfn)
	case SeptPending:
		if veDisabled {
			return Exit{Kind: ExitEPTViolation, GPA: gpa, ExtQual: ExtQualPendingViolate, ErrLevel: lvl, State: publicState(e.state())}, 0
		}
		return Exit{Kind: ExitVE, GPA: gpa, ErrLevel: lvl, State: publicState(e.state())}, 0
	}
	return Exit{Kind: ExitEPTViolation, GPA: gpa, ErrLevel: lvl, State: publicState(e.state())}, 0
}
