package tdxmodule

import (
	"fmt"
	"hash"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/sched"
)

// Regs are the general-purpose registers a SEAMCALL or TDCALL reads and
// writes. RAX carries the leaf on input and the status on output.
type Regs struct {
	RAX, RCX, RDX, R8, R9, R10, R11, R12, R13 uint64
}

// Status returns RAX as a Status (for outputs).
func (r Regs) Status() Status { return Status(r.RAX) }

// Lifecycle states (TDR.LIFECYCLE_STATE).
const (
	LifecycleHKIDAssigned   uint8 = 0
	LifecycleKeysConfigured uint8 = 1
	LifecycleBlocked        uint8 = 2
	LifecycleTeardown       uint8 = 3
)

// OP_STATE values (TDCS.OP_STATE), non-migration subset.
const (
	OpStateUninitialized uint8 = 0
	OpStateInitialized   uint8 = 1
	OpStateRunnable      uint8 = 2
)

// TD is one trust domain's control state: TDR, TDCS and the Secure EPT.
type TD struct {
	id        uint16
	tdr       addr.PFN
	hkid      int
	lifecycle uint8
	opState   uint8
	fatal     bool
	keyPkgs   uint64 // packages whose key is configured
	wbPending uint64 // packages that still owe TDH.PHYMEM.CACHE.WB
	tdcx      []addr.PFN
	chldcnt   uint64

	opLock, treeLock, epochLock uint8

	epoch    uint64
	refcount [2]int32

	pwl       addr.Level // root level: 3 (4-level EPT) or 4 (5-level)
	sharedBit uint
	maxVCPUs  int
	root      *septPage
	septPages int
	vcpus     []*VCPU

	mrtd      hash.Hash // TDCS.MR_TD's SHA-384 context, from TDH.MNG.INIT
	finalMRTD []byte
}

// VCPU is a TD vCPU's TDVPS.
type VCPU struct {
	td         *TD
	tdvpr      addr.PFN
	tdvpx      []addr.PFN
	inited     bool
	associated bool
	inside     bool
	epoch      uint64
	tdrHold    lockset // TDR shared lock held while inside the TD
	irqAfter   uint    // PendGuestInterrupt: 4K pages of a 2M accept before an interrupt
}

// TDVPR returns the vCPU's TDVPR page.
func (v *VCPU) TDVPR() addr.PFN { return v.tdvpr }

// Inside reports whether the vCPU is executing in the TD (between
// TDH.VP.ENTER and the TD exit).
func (v *VCPU) Inside() bool { return v.inside }

type leafFunc func(m *Module, ls *lockset, in Regs) Regs

// dispatch is indexed by leaf number (every modelled leaf is below 64).
var dispatch [64]leafFunc

func register(l Leaf, f leafFunc) { dispatch[l] = f }

// locksetOf is the calling CPU's lock record, kept on its thread (as the
// module keeps per-LP state) and reused: a SEAMCALL on the fault path
// allocates nothing. A call outside a scheduler gets a fresh one.
func locksetOf(t *sched.Thread) *lockset {
	if ls, ok := t.Local().(*lockset); ok {
		return ls
	}
	ls := new(lockset)
	t.SetLocal(ls)
	return ls
}

// SEAMCALL executes one host SEAMCALL. in.RAX holds the leaf (bits 15:0) and
// version (bits 23:16); the returned Regs hold the status in RAX and the
// outputs. t is the simulated CPU making the call (nil outside a scheduler):
// after the call has taken its locks the scheduler may run other threads,
// which then see those locks busy.

func (m *Module) SEAMCALL(t *sched.Thread, in Regs) Regs {
	leaf := Leaf(in.RAX & 0xffff)
	version := (in.RAX >> 16) & 0xff
	var out Regs
	// A completed call leaves ls empty; an aborted run (a Goexit at the
	// yield below) ends the thread with it. No defer: it is the cost of a
	// closure on every SEAMCALL.
	ls := locksetOf(t)
	injected := false
	switch {
	case in.RAX>>24 != 0:
		out.RAX = uint64(OperandInvalid.With(OpRAX))
	case version != 0 && leaf != LeafMemPagePromote && leaf != LeafMemSEPTAdd && leaf != LeafMemSEPTRemove:
		out.RAX = uint64(OperandInvalid.With(OpRAX))
	default:
		var f leafFunc
		if int(leaf) < len(dispatch) {
			f = dispatch[leaf]
		}
		if f == nil {
			out.RAX = uint64(OperandInvalid.With(OpRAX))
			break
		}
		if inj := m.inject.Load(); inj != nil {
			if st, ok := (*inj)(leaf, in); ok {
				out.RAX = uint64(st)
				injected = true
				break
			}
		}
		m.mu.Lock()
		if m.cov == nil {
			out = f(m, ls, in)
		} else {
			out = m.recordAround(leaf, f, ls, in)
		}
		m.mu.Unlock()
	}
	if len(ls.held) > 0 || len(ls.entries) > 0 {
		t.Yield() // the SEAMCALL boundary: locks are visible to other CPUs
		m.mu.Lock()
		ls.release()
		m.mu.Unlock()
	}
	ls.held, ls.entries = ls.held[:0], ls.entries[:0]
	if m.sink == event.Discard {
		return out // nobody listens: skip building and stamping the event
	}
	ev := event.Event{Kind: event.KindSeamcall, Leaf: uint16(leaf), Name: leaf.String(),
		Status: out.RAX, Args: [4]uint64{in.RCX, in.RDX, in.R8, in.R9}}
	if out.RAX != 0 {
		ev.Detail = Status(out.RAX).String()
	}
	if injected {
		ev.Detail += " (injected)"
	}
	t.Stamp(&ev)
	m.sink.Emit(ev)
	return out
}

func fail(s Status) Regs { return Regs{RAX: uint64(s)} }

// hpaOperand validates an HPA operand: 4K aligned (or to align), HKID bits
// zero, below MAX_PA (OPERAND_INVALID), inside a TDMR (ADDR_RANGE_ERROR).
func (m *Module) hpaOperand(v uint64, op uint32, align uint64) (addr.PFN, Status) {
	if v%align != 0 || v>>maxPABits != 0 {
		return 0, OperandInvalid.With(op)
	}
	pfn := addr.HPA(v).PFN()
	if pfn >= m.memPages {
		return 0, OperandAddrRangeError.With(op)
	}
	return pfn, Success
}

// want4KFree checks that pfn is a free 4K page in PAMT and locks its entry
// exclusively (plus its 2M node shared, as every HPA-taking leaf does).
func (m *Module) want4KFree(ls *lockset, pfn addr.PFN, op uint32) (*pamtEnt, *pamt2M, Status) {
	g := m.gib(pfn)
	if g.pt != PTNDA {
		return nil, nil, PageMetadataIncorrect.With(op)
	}
	n := &g.c[(pfn>>9)&511]
	if m.cfg.DynamicPAMT {
		if n.pt == PTNDA {
			return nil, nil, MissingPAMTPagePair.With(op)
		}
		if n.pt != PTPAMT {
			return nil, nil, PageMetadataIncorrect.With(op)
		}
	} else if n.pt != PTNDA {
		return nil, nil, PageMetadataIncorrect.With(op)
	}
	if !ls.try(&n.lock, false) {
		return nil, nil, OperandBusy.With(op)
	}
	e := n.kid(pfn)
	if !ls.try(&e.lock, true) {
		return nil, nil, OperandBusy.With(op)
	}
	if e.pt != PTNDA || m.cfg.DynamicPAMT && m.bitmapBit(pfn) {
		return nil, nil, PageMetadataIncorrect.With(op)
	}
	return e, n, Success
}

// assign4K makes a locked free 4K entry a TD page of type pt.
func assign4K(e *pamtEnt, n *pamt2M, pt uint8, owner uint16) {
	e.pt, e.owner, e.bepoch = pt, owner, 0
	n.x.used++
}

// release4K returns a 4K entry to NDA.
func release4K(e *pamtEnt, n *pamt2M) {
	e.pt, e.bepoch = PTNDA, 0
	n.x.used--
}

// typedOperand resolves an HPA operand naming a control page, locks its
// PAMT entry (shared or exclusive) and checks its page type.
func (m *Module) typedOperand(ls *lockset, v uint64, op uint32, excl bool, pt uint8) (addr.PFN, Status) {
	pfn, st := m.hpaOperand(v, op, addr.PageSize)
	if st != Success {
		return 0, st
	}
	e, _ := m.leaf(pfn)
	if !ls.try(&e.lock, excl) {
		return 0, OperandBusy.With(op)
	}
	if e.pt != pt {
		return 0, PageMetadataIncorrect.With(op)
	}
	return pfn, Success
}

// tdOperand resolves and locks the TDR operand (PAMT lock of the TDR page,
// shared or exclusive) and checks it is a TDR.
func (m *Module) tdOperand(ls *lockset, v uint64, op uint32, excl bool) (*TD, Status) {
	pfn, st := m.typedOperand(ls, v, op, excl, PTTDR)
	if st != Success {
		return nil, st
	}
	return m.tds[pfn], Success
}

// opMask is a set of allowed OP_STATEs.
type opMask uint8

const (
	opInit opMask = 1 << OpStateInitialized
	opRun  opMask = 1 << OpStateRunnable
)

// tdPrologue is the common entry of every TDH.MEM.* / TDH.MR.* leaf (§1.4):
// TDR operand, not fatal, keys configured, TDCS allocated, OP_STATE lock and
// allowed state.
func (m *Module) tdPrologue(ls *lockset, v uint64, op uint32, excl bool, allowed opMask) (*TD, Status) {
	td, st := m.tdOperand(ls, v, op, excl)
	if st != Success {
		return nil, st
	}
	if td.fatal {
		return nil, TDFatal
	}
	if td.lifecycle != LifecycleKeysConfigured {
		return nil, TDKeysNotConfigured
	}
	if len(td.tdcx) < m.cfg.TDCSPages {
		return nil, TDCSNotAllocated
	}
	if !excl && !ls.try(&td.opLock, false) {
		return nil, OperandBusy.With(OpOpState)
	}
	if allowed&(1<<td.opState) == 0 {
		return nil, OpStateIncorrect
	}
	return td, Success
}

// pageInfo decodes a GPA+level operand and checks format, level range,
// alignment and that the GPA is private and within the TD's GPA width.
func (td *TD) pageInfo(v uint64, minL, maxL addr.Level) (addr.GPA, addr.Level, Status) {
	level := addr.Level(v & 7)
	if v&0xff8 != 0 || v>>52 != 0 || level < minL || level > maxL {
		return 0, 0, OperandInvalid.With(OpRCX)
	}
	gpa := addr.GPA(v &^ 0xfff)
	if uint64(gpa)%level.Bytes() != 0 {
		return 0, 0, OperandInvalid.With(OpRCX)
	}
	if uint64(gpa)>>td.sharedBit != 0 {
		return 0, 0, OperandInvalid.With(OpRCX) // shared bit set or beyond GPAW
	}
	return gpa, level, Success
}

// tracked is is_tlb_tracked(): the epoch at which a page was blocked has
// been left by every vCPU.
func (td *TD) tracked(bepoch uint32) bool {
	b := uint64(bepoch)
	if b+1 < td.epoch {
		return true
	}
	return b+1 == td.epoch && td.refcount[b&1] == 0
}

// trackingRequired: TLB tracking rules apply only to a RUNNABLE TD.
func (td *TD) trackingRequired() bool { return td.opState == OpStateRunnable }

// String describes a TD for messages.
func (td *TD) String() string {
	return fmt.Sprintf("TD %d (TDR %s, HKID %d)", td.id, td.tdr.HPA(), td.hkid)
}
