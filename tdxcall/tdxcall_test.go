package tdxcall_test

import (
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxcall"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// Each wrapper puts its operands in the registers its leaf defines: the
// test intercepts the SEAMCALL before the module runs it and compares.
func TestOperands(t *testing.T) {
	mem, err := hostmem.New(hostmem.Config{Bytes: 1 << 30}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := tdxmodule.New(mem, tdxmodule.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var gotLeaf tdxmodule.Leaf
	var got tdxmodule.Regs
	const injected = tdxmodule.Status(0xC0DE)
	m.SetInjector(func(leaf tdxmodule.Leaf, in tdxmodule.Regs) (tdxmodule.Status, bool) {
		gotLeaf, got = leaf, in
		return injected, true
	})
	const (
		tdr   addr.PFN = 0x100
		page  addr.PFN = 0x200
		src   addr.PFN = 0x300
		gpa   addr.GPA = 0x40_0000
		level          = addr.Level2M
	)
	hpa := func(p addr.PFN) uint64 { return uint64(p.HPA()) }
	pair := [2]addr.PFN{0x401, 0x402}
	type seamcall = func() (tdxmodule.Status, tdxmodule.Regs)
	// The wrappers of one page operand, and those of (TDR, GPA, level)
	// whose registers are all gpaLevel.
	onPage := func(f func(*tdxmodule.Module, *sched.Thread, addr.PFN) (tdxmodule.Status, tdxmodule.Regs), p addr.PFN) seamcall {
		return func() (tdxmodule.Status, tdxmodule.Regs) { return f(m, nil, p) }
	}
	atGPA := func(f func(*tdxmodule.Module, *sched.Thread, addr.PFN, addr.GPA, addr.Level) (tdxmodule.Status, tdxmodule.Regs)) seamcall {
		return func() (tdxmodule.Status, tdxmodule.Regs) { return f(m, nil, tdr, gpa, level) }
	}
	gpaLevel := tdxmodule.Regs{RCX: uint64(gpa) | 1, RDX: hpa(tdr)}
	cases := []struct {
		name string
		call seamcall
		leaf tdxmodule.Leaf
		in   tdxmodule.Regs
	}{
		{"MngCreate", func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.MngCreate(m, nil, tdr, 5) },
			tdxmodule.LeafMngCreate, tdxmodule.Regs{RCX: hpa(tdr), RDX: 5}},
		{"MngKeyConfig", func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.MngKeyConfig(m, nil, tdr, 1) },
			tdxmodule.LeafMngKeyConfig, tdxmodule.Regs{RCX: hpa(tdr), R8: 1}},
		{"MngAddCX", func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.MngAddCX(m, nil, tdr, page) },
			tdxmodule.LeafMngAddCX, tdxmodule.Regs{RCX: hpa(page), RDX: hpa(tdr)}},
		{"MngInit", func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.MngInit(m, nil, tdr, 4, 8) },
			tdxmodule.LeafMngInit, tdxmodule.Regs{RCX: hpa(tdr), R8: 4, R9: 8}},
		{"VPCreate", func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.VPCreate(m, nil, tdr, page) },
			tdxmodule.LeafVPCreate, tdxmodule.Regs{RCX: hpa(page), RDX: hpa(tdr)}},
		{"VPAddCX", func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.VPAddCX(m, nil, page, src) },
			tdxmodule.LeafVPAddCX, tdxmodule.Regs{RCX: hpa(src), RDX: hpa(page)}},
		{"VPInit", onPage(tdxcall.VPInit, page), tdxmodule.LeafVPInit, tdxmodule.Regs{RCX: hpa(page)}},
		{"MemSEPTAdd", func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.MemSEPTAdd(m, nil, tdr, gpa, level, page) },
			tdxmodule.LeafMemSEPTAdd, tdxmodule.Regs{RCX: uint64(gpa) | 1, RDX: hpa(tdr), R8: hpa(page)}},
		{"MemPageAdd", func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.MemPageAdd(m, nil, tdr, gpa, page, src) },
			tdxmodule.LeafMemPageAdd, tdxmodule.Regs{RCX: uint64(gpa), RDX: hpa(tdr), R8: hpa(page), R9: hpa(src)}},
		{"MrExtend", func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.MrExtend(m, nil, tdr, gpa+0x100) },
			tdxmodule.LeafMrExtend, tdxmodule.Regs{RCX: uint64(gpa) + 0x100, RDX: hpa(tdr)}},
		{"MrFinalize", onPage(tdxcall.MrFinalize, tdr), tdxmodule.LeafMrFinalize, tdxmodule.Regs{RCX: hpa(tdr)}},
		{"MemPageAug", func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.MemPageAug(m, nil, tdr, gpa, level, page) },
			tdxmodule.LeafMemPageAug, tdxmodule.Regs{RCX: uint64(gpa) | 1, RDX: hpa(tdr), R8: hpa(page)}},
		{"MemRangeBlock", atGPA(tdxcall.MemRangeBlock), tdxmodule.LeafMemRangeBlock, gpaLevel},
		{"MemRangeUnblock", atGPA(tdxcall.MemRangeUnblock), tdxmodule.LeafMemRangeUnblock, gpaLevel},
		{"MemTrack", onPage(tdxcall.MemTrack, tdr), tdxmodule.LeafMemTrack, tdxmodule.Regs{RCX: hpa(tdr)}},
		{"MemPageRemove", atGPA(tdxcall.MemPageRemove), tdxmodule.LeafMemPageRemove, gpaLevel},
		{"MemSEPTRemove", atGPA(tdxcall.MemSEPTRemove), tdxmodule.LeafMemSEPTRemove, gpaLevel},
		{"MemPageDemote", func() (tdxmodule.Status, tdxmodule.Regs) {
			return tdxcall.MemPageDemote(m, nil, tdr, gpa, level, page, pair)
		}, tdxmodule.LeafMemPageDemote, tdxmodule.Regs{RCX: uint64(gpa) | 1, RDX: hpa(tdr), R8: hpa(page), R12: hpa(pair[0]), R13: hpa(pair[1])}},
		{"MemPagePromote", atGPA(tdxcall.MemPagePromote), tdxmodule.LeafMemPagePromote, gpaLevel},
		{"MemSEPTRd", atGPA(tdxcall.MemSEPTRd), tdxmodule.LeafMemSEPTRd, gpaLevel},
		{"VPEnter", onPage(tdxcall.VPEnter, page), tdxmodule.LeafVPEnter, tdxmodule.Regs{RCX: hpa(page)}},
		{"VPFlush", onPage(tdxcall.VPFlush, page), tdxmodule.LeafVPFlush, tdxmodule.Regs{RCX: hpa(page)}},
		{"MngVPFlushDone", onPage(tdxcall.MngVPFlushDone, tdr), tdxmodule.LeafMngVPFlushDone, tdxmodule.Regs{RCX: hpa(tdr)}},
		{"PhymemCacheWB", func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.PhymemCacheWB(m, nil, 1) },
			tdxmodule.LeafPhymemCacheWB, tdxmodule.Regs{R8: 1}},
		{"MngKeyFreeID", onPage(tdxcall.MngKeyFreeID, tdr), tdxmodule.LeafMngKeyFreeID, tdxmodule.Regs{RCX: hpa(tdr)}},
		{"PhymemPageReclaim", onPage(tdxcall.PhymemPageReclaim, page), tdxmodule.LeafPhymemPageReclm, tdxmodule.Regs{RCX: hpa(page)}},
		{"PhymemPageWBInvd", func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.PhymemPageWBInvd(m, nil, page, 3) },
			tdxmodule.LeafPhymemPageWBInvd, tdxmodule.Regs{RCX: hpa(page) | 3<<tdxmodule.KeyIDShift}},
		{"PhymemPageRdmd", onPage(tdxcall.PhymemPageRdmd, page), tdxmodule.LeafPhymemPageRdmd, tdxmodule.Regs{RCX: hpa(page)}},
		{"PhymemPAMTAdd", func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.PhymemPAMTAdd(m, nil, page+7, pair) },
			tdxmodule.LeafPhymemPAMTAdd, tdxmodule.Regs{RCX: hpa(page&^511) | 1, RDX: hpa(pair[0]), R8: hpa(pair[1])}},
		{"PhymemPAMTRemove", func() (tdxmodule.Status, tdxmodule.Regs) { return tdxcall.PhymemPAMTRemove(m, nil, page+7) },
			tdxmodule.LeafPhymemPAMTRemove, tdxmodule.Regs{RCX: hpa(page&^511) | 1}},
	}
	for _, c := range cases {
		st, out := c.call()
		c.in.RAX = uint64(c.leaf)
		if gotLeaf != c.leaf || got != c.in {
			t.Errorf("%s: SEAMCALL %v %+v, want %v %+v", c.name, gotLeaf, got, c.leaf, c.in)
		}
		if st != injected || out.Status() != injected {
			t.Errorf("%s: status %v (RAX %v), want the injected %v", c.name, st, out.Status(), injected)
		}
	}
}
