package tdxmodule

import (
	"crypto/sha512"
	"hash"

	"github.com/tdxsim/tdxsim/addr"
)

func newSHA384() hash.Hash { return sha512.New384() }

// Secure EPT entry states: the module's 7-bit internal encoding
// (sept_state_lookup.h), migration states omitted.
const (
	SeptFree           uint8 = 0x0E
	SeptNLMapped       uint8 = 0x00
	SeptNLBlocked      uint8 = 0x08
	SeptMapped         uint8 = 0x60
	SeptBlocked        uint8 = 0x68
	SeptPending        uint8 = 0x70
	SeptPendingBlocked uint8 = 0x78
)

// SeptStateName names a state.
func SeptStateName(s uint8) string {
	switch s {
	case SeptFree:
		return "FREE"
	case SeptNLMapped:
		return "NL_MAPPED"
	case SeptNLBlocked:
		return "NL_BLOCKED"
	case SeptMapped:
		return "MAPPED"
	case SeptBlocked:
		return "BLOCKED"
	case SeptPending:
		return "PENDING"
	case SeptPendingBlocked:
		return "PENDING_BLOCKED"
	}
	return "UNKNOWN"
}

// publicState is the state number TDH.MEM.SEPT.RD reports in RDX[15:8].
func publicState(s uint8) uint64 {
	switch s {
	case SeptFree:
		return 0
	case SeptBlocked:
		return 1
	case SeptPending:
		return 2
	case SeptPendingBlocked:
		return 3
	case SeptMapped:
		return 4
	case SeptNLBlocked:
		return 0x81
	case SeptNLMapped:
		return 0x84
	}
	return 0xff
}

func isLeafState(s uint8) bool {
	return s == SeptMapped || s == SeptBlocked || s == SeptPending || s == SeptPendingBlocked
}

func isBlocked(s uint8) bool {
	return s == SeptNLBlocked || s == SeptBlocked || s == SeptPendingBlocked
}

func blockedOf(s uint8) uint8 {
	switch s {
	case SeptNLMapped:
		return SeptNLBlocked
	case SeptMapped:
		return SeptBlocked
	case SeptPending:
		return SeptPendingBlocked
	}
	return s
}

func unblockedOf(s uint8) uint8 {
	switch s {
	case SeptNLBlocked:
		return SeptNLMapped
	case SeptBlocked:
		return SeptMapped
	case SeptPendingBlocked:
		return SeptPending
	}
	return s
}

// A SEPT entry, packed: bits 6:0 state, bit 11 TDEL (host entry lock), bits
// 51:12 HPA, bits 61:52 ACCEPT_COUNTER (2M pending, 0..512).
type septEntry uint64

const (
	seLockBit   = 1 << 11
	seHPAMask   = (1<<52 - 1) &^ (1<<12 - 1)
	seCountSh   = 52
	seCountMask = 0x3ff << seCountSh
)

func mkEntry(state uint8, hpa addr.HPA) septEntry {
	return septEntry(uint64(state) | uint64(hpa)&seHPAMask)
}

func (e septEntry) state() uint8      { return uint8(e & 0x7f) }
func (e septEntry) hpa() addr.HPA     { return addr.HPA(uint64(e) & seHPAMask) }
func (e septEntry) locked() bool      { return e&seLockBit != 0 }
func (e septEntry) acceptCount() uint { return uint((uint64(e) & seCountMask) >> seCountSh) }

func (e septEntry) withState(s uint8) septEntry { return e&^0x7f | septEntry(s) }
func (e septEntry) withCount(n uint) septEntry {
	return e&^seCountMask | septEntry(uint64(n)<<seCountSh)&seCountMask
}

// architectural returns the entry as SEPT.RD and error paths report it in
// RCX (§1.3): FREE → only SVE (bit 63); leaf → RWX, MT=WB, IPAT, PS, HPA;
// non-leaf → RWX and HPA.
func (e septEntry) architectural() uint64 {
	const sve = 1 << 63
	s := e.state()
	switch {
	case s == SeptFree:
		return sve
	case s == SeptMapped:
		return sve | 7 | 6<<3 | 1<<6 | 1<<7 | uint64(e.hpa())
	case isLeafState(s): // blocked or pending: RWX clear
		v := uint64(sve | 6<<3 | 1<<6 | 1<<7 | uint64(e.hpa()))
		if s == SeptPending || s == SeptPendingBlocked {
			v |= 1 << 56 // TDP
		}
		if isBlocked(s) {
			v |= 1 << 55 // TDB
		}
		return v
	case s == SeptNLMapped:
		return sve | 7 | uint64(e.hpa())
	}
	return sve | 1<<55 | uint64(e.hpa()) // NL_BLOCKED
}

// septPage is one 4 KiB Secure EPT page: 512 entries for one level.
type septPage struct {
	level    addr.Level // level of the entries (0: they map 4K)
	hpa      addr.HPA
	e        *[512]septEntry // its own 4 KiB object, not a 4864-byte size class with the header
	children *[512]*septPage // non-nil for level >= 1
}

func newSeptPage(level addr.Level, hpa addr.HPA) *septPage {
	p := &septPage{level: level, hpa: hpa, e: new([512]septEntry)}
	for i := range p.e {
		p.e[i] = mkEntry(SeptFree, 0)
	}
	if level > 0 {
		p.children = new([512]*septPage)
	}
	return p
}

func indexAt(gpa addr.GPA, level addr.Level) int {
	return int(uint64(gpa)>>(12+9*uint(level))) & 511
}

// walk goes from the root toward level; it stops at the first entry that is
// not NL_MAPPED. It returns the page and index where it stopped and the level
// of that entry.
func (td *TD) walk(gpa addr.GPA, level addr.Level) (*septPage, int, addr.Level) {
	p := td.root
	for {
		i := indexAt(gpa, p.level)
		if p.level == level || p.e[i].state() != SeptNLMapped {
			return p, i, p.level
		}
		p = p.children[i]
	}
}

// levelState packs RDX "level_state" (§1.3): level in 2:0, public state 15:8.
func levelState(level addr.Level, state uint8) uint64 {
	return uint64(level) | publicState(state)<<8
}
