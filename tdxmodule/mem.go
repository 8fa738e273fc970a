package tdxmodule

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/internal/mutation"
)

func init() {
	register(LeafMemSEPTAdd, (*Module).memSEPTAdd)
	register(LeafMemPageAdd, (*Module).memPageAdd)
	register(LeafMrExtend, (*Module).mrExtend)
	register(LeafMemPageAug, (*Module).memPageAug)
	register(LeafMemRangeBlock, (*Module).memRangeBlock)
	register(LeafMemRangeUnblock, (*Module).memRangeUnblock)
	register(LeafMemTrack, (*Module).memTrack)
	register(LeafMemPageRemove, (*Module).memPageRemove)
	register(LeafMemSEPTRemove, (*Module).memSEPTRemove)
	register(LeafMemPageDemote, (*Module).memPageDemote)
	register(LeafMemPagePromote, (*Module).memPagePromote)
	register(LeafMemSEPTRd, (*Module).memSEPTRd)
	register(LeafPhymemPAMTAdd, (*Module).phymemPAMTAdd)
	register(LeafPhymemPAMTRemove, (*Module).phymemPAMTRemove)
}

// walkFailed is the error return of a walk that stopped above the
// requested level: EPT_WALK_FAILED|RCX with the entry and level_state.
func walkFailed(p *septPage, i int, lvl addr.Level) Regs {
	e := p.e[i]
	return Regs{RAX: uint64(EPTWalkFailed.With(OpRCX)), RCX: e.architectural(), RDX: levelState(lvl, e.state())}
}

func stateIncorrect(e septEntry, lvl addr.Level) Regs {
	return Regs{RAX: uint64(EPTEntryStateIncorrect.With(OpRCX)), RCX: e.architectural(), RDX: levelState(lvl, e.state())}
}

// levelPWL stands for "the TD's root level" in entryPrologue.
const levelPWL addr.Level = 0xff

// entryPrologue is the common start of the TDH.MEM.* leaves that address one
// S-EPT entry (§11 check order): TD operand and state, page_info, the S-EPT
// tree lock (shared or exclusive), the walk to the entry and its host lock.
func (m *Module) entryPrologue(ls *lockset, in Regs, minL, maxL addr.Level, treeExcl bool) (*TD, *septPage, int, addr.Level, Regs, bool) {
	td, st := m.tdPrologue(ls, in.RDX, OpRDX, false, opInit|opRun)
	if st != Success {
		return nil, nil, 0, 0, fail(st), false
	}
	if maxL == levelPWL {
		maxL = td.pwl
	}
	gpa, level, st := td.pageInfo(in.RCX, minL, maxL)
	if st != Success {
		return nil, nil, 0, 0, fail(st), false
	}
	if !ls.try(&td.treeLock, treeExcl) {
		return nil, nil, 0, 0, fail(OperandBusy.With(OpSEPTTree)), false
	}
	p, i, r, ok := m.lockedEntry(ls, td, gpa, level)
	return td, p, i, level, r, ok
}

// lockedEntry walks to (gpa, level) and takes the entry's host lock.
func (m *Module) lockedEntry(ls *lockset, td *TD, gpa addr.GPA, level addr.Level) (*septPage, int, Regs, bool) {
	p, i, lvl := td.walk(gpa, level)
	if lvl != level {
		return nil, 0, walkFailed(p, i, lvl), false
	}
	if !ls.tryEntry(&p.e[i]) {
		return nil, 0, Regs{RAX: uint64(OperandBusy.With(OpRCX)), RCX: p.e[i].architectural(),
			RDX: levelState(lvl, p.e[i].state())}, false
	}
	return p, i, Regs{}, true
}

// memSEPTAdd is TDH.MEM.SEPT.ADD (leaf 3): RCX = GPA|level (1..PWL) of the
// entry that is to point at a new S-EPT page, RDX = TDR|allow_existing,
// R8 = the new page. Tree lock shared; FREE → NL_MAPPED.
func (m *Module) memSEPTAdd(ls *lockset, in Regs) Regs {
	if in.RDX&0xffe != 0 {
		return fail(OperandInvalid.With(OpRDX))
	}
	allowExisting := in.RDX&1 != 0
	in.RDX &^= 0xfff // bit 0 is allow_existing, not part of the TDR HPA
	td, p, i, level, r, ok := m.entryPrologue(ls, in, 1, levelPWL, false)
	if !ok {
		return r
	}
	if s := p.e[i].state(); s != SeptFree {
		if s == SeptNLMapped && allowExisting {
			return Regs{}
		}
		return stateIncorrect(p.e[i], level)
	}
	pfn, st := m.hpaOperand(in.R8, OpR8, addr.PageSize)
	if st != Success {
		return fail(st)
	}
	e, n, st := m.want4KFree(ls, pfn, OpR8)
	if st != Success {
		return fail(st)
	}
	assign4K(e, n, PTEPT, td.id)
	child := newSeptPage(level-1, pfn.HPA())
	p.children[i] = child
	p.e[i] = mkEntry(SeptNLMapped, pfn.HPA()) | p.e[i]&seLockBit
	td.chldcnt++
	td.septPages++
	return Regs{}
}

// memPageAdd is TDH.MEM.PAGE.ADD (leaf 2): RCX = GPA|0, RDX = TDR, R8 =
// target page, R9 = source page (shared). TD build only (INITIALIZED), TDR
// exclusive. Copies the source into the target, maps it MAPPED, and extends
// MRTD with one 128-byte block ("MEM.PAGE.ADD", GPA).
func (m *Module) memPageAdd(ls *lockset, in Regs) Regs {
	td, st := m.tdPrologue(ls, in.RDX, OpRDX, true, opInit)
	if st != Success {
		return fail(st)
	}
	gpa, _, st := td.pageInfo(in.RCX, 0, 0)
	if st != Success {
		return fail(st)
	}
	target, st := m.hpaOperand(in.R8, OpR8, addr.PageSize)
	if st != Success {
		return fail(st)
	}
	p, i, lvl := td.walk(gpa, 0)
	if lvl != 0 {
		return walkFailed(p, i, lvl)
	}
	if p.e[i].state() != SeptFree {
		return stateIncorrect(p.e[i], 0)
	}
	// The source is checked after the entry state and before the target (§11).
	if in.R9%addr.PageSize != 0 || in.R9>>maxPABits != 0 || addr.HPA(in.R9).PFN() >= m.memPages {
		return fail(OperandInvalid.With(OpR9))
	}
	e, n, st := m.want4KFree(ls, target, OpR8)
	if st != Success {
		return fail(st)
	}
	if err := m.mem.CopyPage(nil, target, addr.HPA(in.R9).PFN()); err != nil {
		return fail(OperandInvalid.With(OpR9))
	}
	assign4K(e, n, PTREG, td.id)
	p.e[i] = mkEntry(SeptMapped, target.HPA())
	td.chldcnt++
	td.mrtd.Write(mrtdBlock("MEM.PAGE.ADD", gpa))
	return Regs{}
}

// mrExtend is TDH.MR.EXTEND (leaf 16): RCX = GPA (256-byte aligned), RDX =
// TDR. Extends MRTD with a header block ("MR.EXTEND", GPA) and the 256 bytes
// of page content at GPA (§8).
func (m *Module) mrExtend(ls *lockset, in Regs) Regs {
	td, st := m.tdPrologue(ls, in.RDX, OpRDX, true, opInit)
	if st != Success {
		return fail(st)
	}
	if in.RCX%256 != 0 || in.RCX>>td.sharedBit != 0 {
		return fail(OperandInvalid.With(OpRCX))
	}
	gpa := addr.GPA(in.RCX)
	p, i, lvl := td.walk(gpa, 0)
	e := p.e[i]
	if !isLeafState(e.state()) && lvl != 0 {
		return Regs{RAX: uint64(EPTEntryNotPresent.With(OpRCX)), RCX: e.architectural(), RDX: levelState(lvl, e.state())}
	}
	if e.state() != SeptMapped {
		return fail(EPTEntryNotPresent)
	}
	off := uint64(gpa) & (lvl.Bytes() - 1)
	pfn := e.hpa().PFN() + addr.PFN(off>>12)
	chunk := make([]byte, 256)
	if b := m.mem.Bytes(pfn); b != nil {
		copy(chunk, b[off&0xfff:])
	}
	td.mrtd.Write(mrtdBlock("MR.EXTEND", gpa))
	td.mrtd.Write(chunk)
	return Regs{}
}

// memPageAug is TDH.MEM.PAGE.AUG (leaf 6): RCX = GPA|level (0, 1; 2 when
// the module allows 1G), RDX = TDR, R8 = target (aligned to the level).
// FREE → PENDING; PAMT at that level → PT_REG. Page content is not touched
// (ACCEPT zeroes it).
func (m *Module) memPageAug(ls *lockset, in Regs) Regs {
	td, st := m.tdPrologue(ls, in.RDX, OpRDX, false, opInit|opRun)
	if st != Success {
		return fail(st)
	}
	maxL := addr.Level2M
	if m.cfg.Allow1GAug {
		maxL = addr.Level1G
	}
	gpa, level, st := td.pageInfo(in.RCX, 0, maxL)
	if st != Success {
		return fail(st)
	}
	if !ls.try(&td.treeLock, false) {
		return fail(OperandBusy.With(OpSEPTTree))
	}
	p, i, r, ok := m.lockedEntry(ls, td, gpa, level)
	if !ok {
		return r
	}
	if p.e[i].state() != SeptFree {
		return stateIncorrect(p.e[i], level)
	}
	target, st := m.hpaOperand(in.R8, OpR8, level.Bytes())
	if st != Success {
		return fail(st)
	}
	if level == 0 {
		e, n, st := m.want4KFree(ls, target, OpR8)
		if st != Success {
			return fail(st)
		}
		assign4K(e, n, PTREG, td.id)
	} else {
		e, st := m.wantHugeFree(ls, target, level, OpR8)
		if st != Success {
			return fail(st)
		}
		e.pt, e.owner, e.bepoch = PTREG, td.id, 0
	}
	state := SeptPending
	if mutation.On(mutation.AugSkipsPending) {
		state = SeptMapped
	}
	p.e[i] = mkEntry(state, target.HPA()) | seLockBit
	td.chldcnt += level.Pages()
	return Regs{}
}

// wantHugeFree checks that a 2M or 1G range is entirely free in PAMT and
// locks its entry exclusively. Dynamic PAMT: a 2M range with a page pair
// installed is not free (HPA_RANGE_NOT_FREE is PAMT.ADD's; AUG reports the
// metadata mismatch).
func (m *Module) wantHugeFree(ls *lockset, pfn addr.PFN, level addr.Level, op uint32) (*pamtEnt, Status) {
	g := m.gib(pfn)
	if level == addr.Level1G {
		if !ls.try(&g.lock, true) {
			return nil, OperandBusy.With(op)
		}
		if g.pt != PTNDA {
			return nil, PageMetadataIncorrect.With(op)
		}
		for i := range g.c {
			if g.c[i].pt != PTNDA || g.c[i].used() != 0 {
				return nil, PageMetadataIncorrect.With(op)
			}
		}
		if g.bitmap != nil && m.bitmapAnyRange(g, 0, 1<<18) {
			return nil, PageMetadataIncorrect.With(op)
		}
		return &g.pamtEnt, Success
	}
	if g.pt != PTNDA {
		return nil, PageMetadataIncorrect.With(op)
	}
	n := &g.c[(pfn>>9)&511]
	if !ls.try(&n.lock, true) {
		return nil, OperandBusy.With(op)
	}
	if n.pt != PTNDA || n.used() != 0 {
		return nil, PageMetadataIncorrect.With(op)
	}
	if m.cfg.DynamicPAMT && m.bitmapAny2M(pfn) {
		return nil, PageMetadataIncorrect.With(op)
	}
	return &n.pamtEnt, Success
}

func (m *Module) bitmapAnyRange(g *pamt1G, from, to uint64) bool {
	for i := from >> 6; i < to>>6; i++ {
		if g.bitmap[i] != 0 {
			return true
		}
	}
	return false
}

// pamtOfMapping returns the PAMT entry of the page a SEPT entry maps or
// points to: the leaf's page at its level, or a child S-EPT page's 4K entry.
func (m *Module) pamtOfMapping(e septEntry, lvl addr.Level) (*pamtEnt, addr.Level) {
	pfn := e.hpa().PFN()
	if isLeafState(e.state()) {
		switch lvl {
		case addr.Level1G:
			return &m.gib(pfn).pamtEnt, lvl
		case addr.Level2M:
			return &m.node2M(pfn).pamtEnt, lvl
		}
	}
	return m.node2M(pfn).kid(pfn), addr.Level4K
}

// memRangeBlock is TDH.MEM.RANGE.BLOCK (leaf 7): RCX = GPA|level, RDX = TDR.
// Tree lock exclusive. NL_MAPPED/MAPPED/PENDING → blocked; the page's
// PAMT.BEPOCH = TD_EPOCH.
func (m *Module) memRangeBlock(ls *lockset, in Regs) Regs {
	td, p, i, level, r, ok := m.entryPrologue(ls, in, 0, levelPWL, true)
	if !ok {
		return r
	}
	e := p.e[i]
	switch s := e.state(); s {
	case SeptNLMapped, SeptMapped, SeptPending:
		pe, _ := m.pamtOfMapping(e, level)
		pe.bepoch = uint32(td.epoch)
		p.e[i] = e.withState(blockedOf(s)).withCount(0)
		return Regs{}
	case SeptNLBlocked, SeptBlocked, SeptPendingBlocked:
		return Regs{RAX: uint64(GPARangeAlreadyBlocked.With(OpRCX)), RCX: e.architectural(), RDX: levelState(level, s)}
	}
	return stateIncorrect(e, level)
}

// memRangeUnblock is TDH.MEM.RANGE.UNBLOCK (leaf 39). On a RUNNABLE TD the
// blocking epoch must be tracked (TLB_TRACKING_NOT_DONE|SEPT_TREE).
func (m *Module) memRangeUnblock(ls *lockset, in Regs) Regs {
	td, p, i, level, r, ok := m.entryPrologue(ls, in, 0, levelPWL, true)
	if !ok {
		return r
	}
	e := p.e[i]
	if !isBlocked(e.state()) {
		return stateIncorrect(e, level)
	}
	pe, _ := m.pamtOfMapping(e, level)
	if td.trackingRequired() && !td.tracked(pe.bepoch) {
		return fail(TLBTrackingNotDone.With(OpSEPTTree))
	}
	p.e[i] = e.withState(unblockedOf(e.state()))
	return Regs{}
}

// memTrack is TDH.MEM.TRACK (leaf 38): RCX = TDR. Advances TD_EPOCH unless
// vCPUs that entered in the previous epoch are still inside
// (TDX_PREVIOUS_TLB_EPOCH_BUSY).
func (m *Module) memTrack(ls *lockset, in Regs) Regs {
	td, st := m.tdPrologue(ls, in.RCX, OpRCX, false, opInit|opRun)
	if st != Success {
		return fail(st)
	}
	if !ls.try(&td.epochLock, true) {
		return fail(OperandBusy.With(OpTDEpoch))
	}
	if td.refcount[1-(td.epoch&1)] != 0 {
		return fail(PreviousTLBEpochBusy)
	}
	td.epoch++
	return Regs{}
}

// readyToChange checks the entry REMOVE/DEMOTE (leaf) or SEPT.REMOVE/PROMOTE
// (non-leaf) may act on: the right kind of entry, then, on a RUNNABLE TD,
// blocked with its blocking epoch tracked.
func (m *Module) readyToChange(td *TD, e septEntry, level addr.Level, leaf bool) (Regs, bool) {
	s := e.state()
	if leaf && !isLeafState(s) || !leaf && s != SeptNLMapped && s != SeptNLBlocked {
		return stateIncorrect(e, level), false
	}
	return m.blockedAndTracked(td, e, level)
}

// blockedAndTracked applies the RUNNABLE-TD prerequisites of REMOVE,
// DEMOTE, PROMOTE and SEPT.REMOVE: the entry is blocked and its blocking
// epoch tracked.
func (m *Module) blockedAndTracked(td *TD, e septEntry, level addr.Level) (Regs, bool) {
	if !td.trackingRequired() {
		return Regs{}, true
	}
	if !isBlocked(e.state()) {
		return Regs{RAX: uint64(GPARangeNotBlocked.With(OpRCX)), RCX: e.architectural(), RDX: levelState(level, e.state())}, false
	}
	pe, _ := m.pamtOfMapping(e, level)
	if !td.tracked(pe.bepoch) {
		return Regs{RAX: uint64(TLBTrackingNotDone.With(OpRCX)), RCX: e.architectural(), RDX: levelState(level, e.state())}, false
	}
	return Regs{}, true
}

// memPageRemove is TDH.MEM.PAGE.REMOVE (leaf 29): RCX = GPA|level (0..2),
// RDX = TDR. Leaf → FREE, its page → PT_NDA; RCX = the removed HPA. With
// Dynamic PAMT, RCX bit 62 hints that the 2M range's 4K PAMT is now empty.
func (m *Module) memPageRemove(ls *lockset, in Regs) Regs {
	td, p, i, level, r, ok := m.entryPrologue(ls, in, 0, addr.Level1G, false)
	if !ok {
		return r
	}
	e := p.e[i]
	if !isLeafState(e.state()) {
		return stateIncorrect(e, level)
	}
	// Module: tdh_mem_page_remove.c takes the removed page's PAMT entry
	// exclusive (pamt_implicit_get_with_nl_entry_and_lock) before the
	// blocked/tracked checks, so a busy PAMT entry wins over NOT_BLOCKED.
	pe, _ := m.pamtOfMapping(e, level)
	if !ls.try(&pe.lock, true) {
		return fail(OperandBusy.With(OpRCX))
	}
	if td.trackingRequired() {
		if !isBlocked(e.state()) {
			return Regs{RAX: uint64(GPARangeNotBlocked.With(OpRCX)), RCX: e.architectural(), RDX: levelState(level, e.state())}
		}
		// is_tlb_and_iotlb_tracked() fails with RCX/RDX left at the
		// zero the handler set on entry: no SEPT entry details.
		if !td.tracked(pe.bepoch) {
			return fail(TLBTrackingNotDone.With(OpRCX))
		}
	}
	pfn := e.hpa().PFN()
	m.releaseLeaf(pfn, pe, level)
	p.e[i] = mkEntry(SeptFree, 0) | seLockBit
	td.chldcnt -= level.Pages()
	out := Regs{RCX: uint64(pfn.HPA())}
	if m.cfg.DynamicPAMT && level == 0 && m.node2M(pfn).used() == 0 {
		out.RCX |= 1 << 62
	}
	return out
}

// memSEPTRemove is TDH.MEM.SEPT.REMOVE (leaf 30): RCX = GPA|level of the
// entry pointing to an S-EPT page, RDX = TDR. Tree lock exclusive; every
// child entry must be FREE (EPT_PAGE_NOT_FREE); RCX = the freed page.
func (m *Module) memSEPTRemove(ls *lockset, in Regs) Regs {
	td, p, i, level, r, ok := m.entryPrologue(ls, in, 1, levelPWL, true)
	if !ok {
		return r
	}
	e := p.e[i]
	if r, ok := m.readyToChange(td, e, level, false); !ok {
		return r
	}
	child := p.children[i]
	for _, ce := range child.e {
		if ce.state() != SeptFree {
			return Regs{RAX: uint64(EPTPageNotFree.With(OpRCX)), RCX: e.architectural(), RDX: levelState(level, e.state())}
		}
	}
	pfn := e.hpa().PFN()
	pe := m.node2M(pfn).kid(pfn)
	if !ls.try(&pe.lock, true) {
		return fail(OperandBusy.With(OpRCX))
	}
	release4K(pe, m.node2M(pfn))
	p.children[i] = nil
	p.e[i] = mkEntry(SeptFree, 0) | seLockBit
	td.chldcnt--
	td.septPages--
	return Regs{RCX: uint64(pfn.HPA())}
}

// memPageDemote is TDH.MEM.PAGE.DEMOTE (leaf 15): RCX = GPA|level (1: split
// 2M into 4K, 2: split 1G into 2M), RDX = TDR, R8 = new S-EPT page; with
// Dynamic PAMT, R12/R13 = the page pair for the 2M range being split to 4K.
// The new page's 512 entries copy the parent's unblocked state.
func (m *Module) memPageDemote(ls *lockset, in Regs) Regs {
	if in.RDX&0xffe != 0 {
		return fail(OperandInvalid.With(OpRDX))
	}
	origRCX, origRDX := in.RCX, in.RDX
	in.RDX &^= 1 // l2_sept_add_mode: TD partitioning only, ignored
	td, p, i, level, r, ok := m.entryPrologue(ls, in, 1, addr.Level1G, false)
	if !ok {
		return r
	}
	e := p.e[i]
	if r, ok := m.readyToChange(td, e, level, true); !ok {
		return r
	}
	newPFN, st := m.hpaOperand(in.R8, OpR8, addr.PageSize)
	if st != Success {
		return fail(st)
	}
	big, _ := m.pamtOfMapping(e, level)
	if !ls.try(&big.lock, true) {
		return fail(OperandBusy.With(OpRCX))
	}
	ne, nn, st := m.want4KFree(ls, newPFN, OpR8)
	if st != Success {
		return fail(st)
	}
	base := e.hpa().PFN()
	var pair [2]addr.PFN
	if m.cfg.DynamicPAMT && level == addr.Level2M {
		var st Status
		if pair, st = m.pairOperands(ls, [2]uint64{in.R12, in.R13}, [2]uint32{OpR12, OpR13}, base); st != Success {
			return fail(st)
		}
		if pair[0] == pair[1] {
			return fail(OperandInvalid.With(OpR13))
		}
	}
	// Module: tdh_mem_page_demote.c: before anything is committed, a
	// pending host interrupt ends the call with TDX_INTERRUPTED_RESTARTABLE
	// and RCX/RDX restored; the caller repeats it whole. With
	// ENHANCED_DEMOTE_INTERRUPTIBILITY only partitioned TDs (L2 VMs, not
	// modelled) poll, so the model polls only without the feature.
	if m.cfg.NoEnhancedDemote && m.hostIRQ {
		m.hostIRQ = false
		return Regs{RAX: uint64(InterruptedRestartable), RCX: origRCX, RDX: origRDX}
	}
	// Commit.
	assign4K(ne, nn, PTEPT, td.id)
	child := newSeptPage(level-1, newPFN.HPA())
	cs := unblockedOf(e.state())
	step := addr.HPA((level - 1).Bytes())
	for k := range child.e {
		child.e[k] = mkEntry(cs, e.hpa()+addr.HPA(k)*step)
	}
	p.children[i] = child
	p.e[i] = mkEntry(SeptNLMapped, newPFN.HPA()) | seLockBit
	owner := big.owner
	big.pt, big.bepoch = PTNDA, 0
	if level == addr.Level1G {
		g := m.gib(base)
		for k := range g.c {
			g.c[k].pamtEnt = pamtEnt{pt: PTREG, owner: owner}
		}
	} else {
		n := m.node2M(base)
		if m.cfg.DynamicPAMT {
			m.installPair(n, pair)
		}
		for k := addr.PFN(0); k < 512; k++ {
			*n.kid(base + k) = pamtEnt{pt: PTREG, owner: owner}
		}
		n.x.used = 512
	}
	td.chldcnt++
	td.septPages++
	return Regs{}
}

// memPagePromote is TDH.MEM.PAGE.PROMOTE (leaf 23): RCX = GPA|level (1 or 2:
// size of the merged page), RDX = TDR. The 512 children must be identical
// leaves over contiguous, aligned memory (EPT_INVALID_PROMOTE_CONDITIONS).
// RCX = the freed S-EPT page; with Dynamic PAMT, RDX/R8 = the freed pair
// (the register is [not found] in the sources; the model's choice).
// KVM never calls it (no merging upstream); it is modelled for completeness.
func (m *Module) memPagePromote(ls *lockset, in Regs) Regs {
	td, p, i, level, r, ok := m.entryPrologue(ls, in, 1, addr.Level1G, false)
	if !ok {
		return r
	}
	e := p.e[i]
	if r, ok := m.readyToChange(td, e, level, false); !ok {
		return r
	}
	child := p.children[i]
	for k := range child.e {
		if !ls.tryEntry(&child.e[k]) {
			return fail(OperandBusy.With(OpRCX))
		}
	}
	c0 := child.e[0]
	step := addr.HPA((level - 1).Bytes())
	if s := c0.state(); (s != SeptMapped && s != SeptPending) || uint64(c0.hpa())%level.Bytes() != 0 {
		return fail(EPTInvalidPromoteCondition.With(OpRCX))
	}
	for k := range child.e {
		ck := child.e[k]
		if ck.state() != c0.state() || ck.hpa() != c0.hpa()+addr.HPA(k)*step || ck.acceptCount() != 0 {
			return fail(EPTInvalidPromoteCondition.With(OpRCX))
		}
	}
	cpfn := e.hpa().PFN()
	ce := m.node2M(cpfn).kid(cpfn)
	if !ls.try(&ce.lock, true) {
		return fail(OperandBusy.With(OpRCX))
	}
	// Commit: children's PAMT merge into the parent entry.
	base := c0.hpa().PFN()
	out := Regs{RCX: uint64(cpfn.HPA())}
	owner := td.id
	if level == addr.Level1G {
		g := m.gib(base)
		for k := range g.c {
			g.c[k].pamtEnt = pamtEnt{}
		}
		g.pamtEnt = pamtEnt{pt: PTREG, owner: owner}
	} else {
		n := m.node2M(base)
		kids := n.kids()
		for k := range kids {
			kids[k] = pamtEnt{}
		}
		n.x.used = 0
		if m.cfg.DynamicPAMT {
			pair := m.removePair(n)
			out.RDX, out.R8 = uint64(pair[0].HPA()), uint64(pair[1].HPA())
		}
		n.pamtEnt = pamtEnt{pt: PTREG, owner: owner}
	}
	release4K(ce, m.node2M(cpfn))
	p.children[i] = nil
	p.e[i] = mkEntry(c0.state(), c0.hpa()) | seLockBit
	td.chldcnt--
	td.septPages--
	return out
}

// memSEPTRd is TDH.MEM.SEPT.RD (leaf 25): RCX = GPA|level, RDX = TDR; returns
// the entry (RCX) and level_state (RDX) where the walk ended.
func (m *Module) memSEPTRd(ls *lockset, in Regs) Regs {
	td, st := m.tdPrologue(ls, in.RDX, OpRDX, false, opInit|opRun)
	if st != Success {
		return fail(st)
	}
	gpa, level, st := td.pageInfo(in.RCX, 0, td.pwl)
	if st != Success {
		return fail(st)
	}
	if !ls.try(&td.treeLock, false) {
		return fail(OperandBusy.With(OpSEPTTree))
	}
	p, i, lvl := td.walk(gpa, level)
	if lvl != level {
		return walkFailed(p, i, lvl)
	}
	return Regs{RCX: p.e[i].architectural(), RDX: levelState(lvl, p.e[i].state())}
}

// pairPageFree checks a page offered as Dynamic PAMT backing: inside the
// range it will describe, or a free 4K page elsewhere; not already donated.
func (m *Module) pairPageFree(ls *lockset, pp, rangeBase addr.PFN, op uint32) Status {
	if m.bitmapBit(pp) {
		return PageNotFree.With(op)
	}
	if pp>>9 == rangeBase>>9 {
		return Success
	}
	e, lvl := m.leaf(pp)
	if lvl != addr.Level4K && m.node2M(pp).pt == PTNDA && m.gib(pp).pt == PTNDA {
		return Success // a free 2M range without 4K metadata: the page is free
	}
	if !ls.try(&e.lock, false) {
		return OperandBusy.With(op)
	}
	if e.pt != PTNDA {
		return PageNotFree.With(op)
	}
	return Success
}

// pairOperands validates the two page operands of a Dynamic PAMT pair
// (PAMT.ADD: RDX/R8; DEMOTE: R12/R13) for the 2M range at base.
func (m *Module) pairOperands(ls *lockset, regs [2]uint64, ops [2]uint32, base addr.PFN) ([2]addr.PFN, Status) {
	var pair [2]addr.PFN
	for k, v := range regs {
		pp, st := m.hpaOperand(v, ops[k], addr.PageSize)
		if st != Success {
			return pair, st
		}
		if st := m.pairPageFree(ls, pp, base, ops[k]); st != Success {
			return pair, st
		}
		pair[k] = pp
	}
	return pair, Success
}

func (m *Module) installPair(n *pamt2M, pair [2]addr.PFN) {
	m.setBitmapBit(pair[0], true)
	m.setBitmapBit(pair[1], true)
	x := n.ext()
	x.pair = pair
	n.pt = PTPAMT
	x.kids = new([512]pamtEnt)
	x.used = 0
	m.pairs++
}

func (m *Module) removePair(n *pamt2M) [2]addr.PFN {
	pair := n.x.pair
	m.setBitmapBit(pair[0], false)
	m.setBitmapBit(pair[1], false)
	n.pt = PTNDA
	if n.x.used == 0 {
		n.x = nil // nothing left at 4K
	} else {
		n.x.pair, n.x.kids = [2]addr.PFN{}, nil
	}
	m.pairs--
	return pair
}

// pamtRangeOperand decodes the RCX of PAMT.ADD/REMOVE (a 2M-aligned HPA
// with level 1; Dynamic PAMT only) and locks the range's PAMT_2M entry
// exclusively.
func (m *Module) pamtRangeOperand(ls *lockset, rcx uint64) (addr.PFN, *pamt2M, Status) {
	if !m.cfg.DynamicPAMT {
		return 0, nil, OperandInvalid.With(OpRAX)
	}
	if rcx&7 != 1 || rcx&0xff8 != 0 {
		return 0, nil, OperandInvalid.With(OpRCX)
	}
	base, st := m.hpaOperand(rcx&^0xfff, OpRCX, addr.Size2M)
	if st != Success {
		return 0, nil, st
	}
	n := m.node2M(base)
	if !ls.try(&n.lock, true) {
		return 0, nil, OperandBusy.With(OpRCX)
	}
	return base, n, Success
}

// phymemPAMTAdd is TDH.PHYMEM.PAMT.ADD (leaf 58, Dynamic PAMT): RCX = 2M
// aligned HPA|1, RDX/R8 = two pages that become the range's 4K PAMT.
func (m *Module) phymemPAMTAdd(ls *lockset, in Regs) Regs {
	base, n, st := m.pamtRangeOperand(ls, in.RCX)
	if st != Success {
		return fail(st)
	}
	if n.pt != PTNDA || m.gib(base).pt != PTNDA {
		return fail(HPARangeNotFree.With(OpRCX))
	}
	pair, st := m.pairOperands(ls, [2]uint64{in.RDX, in.R8}, [2]uint32{OpRDX, OpR8}, base)
	if st != Success {
		return fail(st)
	}
	if pair[0] == pair[1] {
		return fail(PageNotFree.With(OpR8))
	}
	m.installPair(n, pair)
	return Regs{}
}

// phymemPAMTRemove is TDH.PHYMEM.PAMT.REMOVE (leaf 59, Dynamic PAMT): RCX =
// 2M HPA|1. Every 4K entry must be free (PAMT_PAGE_NOT_EMPTY); returns the
// pair in RDX/R8.
func (m *Module) phymemPAMTRemove(ls *lockset, in Regs) Regs {
	_, n, st := m.pamtRangeOperand(ls, in.RCX)
	if st != Success {
		return fail(st)
	}
	if n.pt != PTPAMT {
		return fail(NoPAMTPagePair.With(OpRCX))
	}
	kids := n.kids()
	for k := range kids {
		if kids[k].pt != PTNDA {
			return fail(PAMTPageNotEmpty.With(uint32(k / 256)))
		}
	}
	pair := m.removePair(n)
	return Regs{RDX: uint64(pair[0].HPA()), R8: uint64(pair[1].HPA())}
}
