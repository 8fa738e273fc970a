package tdxmodule

import "fmt"

// Leaf is a SEAMCALL leaf number (RAX bits 15:0); the values are those of
// the TDX module's include/tdx_api_defs.h, and 58/59 of the Linux Dynamic
// PAMT series.
type Leaf uint16

// Host SEAMCALL leaves modelled.
const (
	LeafVPEnter          Leaf = 0
	LeafMngAddCX         Leaf = 1
	LeafMemPageAdd       Leaf = 2
	LeafMemSEPTAdd       Leaf = 3
	LeafVPAddCX          Leaf = 4
	LeafMemPageAug       Leaf = 6
	LeafMemRangeBlock    Leaf = 7
	LeafMngKeyConfig     Leaf = 8
	LeafMngCreate        Leaf = 9
	LeafVPCreate         Leaf = 10
	LeafMemPageDemote    Leaf = 15
	LeafMrExtend         Leaf = 16
	LeafMrFinalize       Leaf = 17
	LeafVPFlush          Leaf = 18
	LeafMngVPFlushDone   Leaf = 19
	LeafMngKeyFreeID     Leaf = 20
	LeafMngInit          Leaf = 21
	LeafVPInit           Leaf = 22
	LeafMemPagePromote   Leaf = 23
	LeafPhymemPageRdmd   Leaf = 24
	LeafMemSEPTRd        Leaf = 25
	LeafMngKeyReclaimID  Leaf = 27
	LeafPhymemPageReclm  Leaf = 28
	LeafMemPageRemove    Leaf = 29
	LeafMemSEPTRemove    Leaf = 30
	LeafMemTrack         Leaf = 38
	LeafMemRangeUnblock  Leaf = 39
	LeafPhymemCacheWB    Leaf = 40
	LeafPhymemPageWBInvd Leaf = 41
	LeafPhymemPAMTAdd    Leaf = 58
	LeafPhymemPAMTRemove Leaf = 59
)

// TDCALL leaves modelled.
const (
	TdcallVPVMCall      Leaf = 0
	TdcallMemPageAccept Leaf = 6
)

var leafNames = map[Leaf]string{
	LeafVPEnter: "TDH.VP.ENTER", LeafMngAddCX: "TDH.MNG.ADDCX", LeafMemPageAdd: "TDH.MEM.PAGE.ADD",
	LeafMemSEPTAdd: "TDH.MEM.SEPT.ADD", LeafVPAddCX: "TDH.VP.ADDCX", LeafMemPageAug: "TDH.MEM.PAGE.AUG",
	LeafMemRangeBlock: "TDH.MEM.RANGE.BLOCK", LeafMngKeyConfig: "TDH.MNG.KEY.CONFIG",
	LeafMngCreate: "TDH.MNG.CREATE", LeafVPCreate: "TDH.VP.CREATE", LeafMemPageDemote: "TDH.MEM.PAGE.DEMOTE",
	LeafMrExtend: "TDH.MR.EXTEND", LeafMrFinalize: "TDH.MR.FINALIZE", LeafVPFlush: "TDH.VP.FLUSH",
	LeafMngVPFlushDone: "TDH.MNG.VPFLUSHDONE", LeafMngKeyFreeID: "TDH.MNG.KEY.FREEID",
	LeafMngInit: "TDH.MNG.INIT", LeafVPInit: "TDH.VP.INIT", LeafMemPagePromote: "TDH.MEM.PAGE.PROMOTE",
	LeafPhymemPageRdmd: "TDH.PHYMEM.PAGE.RDMD", LeafMemSEPTRd: "TDH.MEM.SEPT.RD",
	LeafMngKeyReclaimID: "TDH.MNG.KEY.RECLAIMID", LeafPhymemPageReclm: "TDH.PHYMEM.PAGE.RECLAIM",
	LeafMemPageRemove: "TDH.MEM.PAGE.REMOVE", LeafMemSEPTRemove: "TDH.MEM.SEPT.REMOVE",
	LeafMemTrack: "TDH.MEM.TRACK", LeafMemRangeUnblock: "TDH.MEM.RANGE.UNBLOCK",
	LeafPhymemCacheWB: "TDH.PHYMEM.CACHE.WB", LeafPhymemPageWBInvd: "TDH.PHYMEM.PAGE.WBINVD",
	LeafPhymemPAMTAdd: "TDH.PHYMEM.PAMT.ADD", LeafPhymemPAMTRemove: "TDH.PHYMEM.PAMT.REMOVE",
}

// String returns the leaf's architectural name.
func (l Leaf) String() string {
	if int(l) < len(leafNameByNum) && leafNameByNum[l] != "" {
		return leafNameByNum[l]
	}
	return fmt.Sprintf("TDH.LEAF(%d)", uint16(l))
}

// leafNameByNum is leafNames as an array: String is on every SEAMCALL's
// path, and an index is cheaper than a map lookup.
var leafNameByNum = func() (a [64]string) {
	for l, n := range leafNames {
		a[l] = n
	}
	return a
}()

// Leaves returns every modelled host leaf, in number order.
func Leaves() []Leaf {
	var out []Leaf
	for l := Leaf(0); l < 64; l++ {
		if _, ok := leafNames[l]; ok {
			out = append(out, l)
		}
	}
	return out
}
