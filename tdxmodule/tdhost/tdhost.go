// Package tdhost is a minimal host that drives the TDX module through a
// TD's whole life at the SEAMCALL level — build (with measured image), run
// (vCPUs accept memory, the host AUGs on EPT violations), and teardown
// (HKID release and RECLAIM of every page) — in the order the kernel uses
// (arch/x86/kvm/vmx/tdx.c), without KVM's MMU. It serves `tdxsim mrtd`
// (any GPA layout, no memslots needed) and the module's end-to-end tests;
// the TD KVM runs is kvm/tdx's.
package tdhost

import (
	"fmt"
	"maps"
	"slices"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxcall"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// Host owns host memory and the module.
type Host struct {
	Mem       *hostmem.Memory
	Mod       *tdxmodule.Module
	hkidUse   []bool
	dpamtLock *sched.SpinLock
	dpamtRef  map[uint64]int // per 2M physical range, as the kernel's atomic_t array
}

// New wraps a memory and module pair.
func New(mem *hostmem.Memory, mod *tdxmodule.Module) *Host {
	return &Host{Mem: mem, Mod: mod, hkidUse: make([]bool, mod.Config().HKIDs+1),
		dpamtLock: sched.NewSpinLock("dpamt_lock"), dpamtRef: map[uint64]int{}}
}

// Region is part of a TD's initial image.
type Region struct {
	GPA     addr.GPA
	Data    []byte // rounded up to 4 KiB with zeros
	Measure bool   // TDH.MR.EXTEND each 256-byte chunk
}

// TD is a TD this host built.
type TD struct {
	h        *Host
	Acct     hostmem.Account
	TDR      addr.PFN
	HKID     int
	tdcs     []addr.PFN
	vcpus    []vcpu
	sept     []map[uint64]addr.PFN // per level: gpa>>shift → S-EPT page
	private  []addr.PFN            // mapped private pages, for teardown
	septLock *sched.Mutex          // stands in for KVM's mmu_lock around S-EPT building
	Retries  int                   // TDX_OPERAND_BUSY retries taken
}

type vcpu struct {
	tdvpr addr.PFN
	tdvpx []addr.PFN
}

// VCPU returns vCPU i's TDVPR.
func (td *TD) VCPU(i int) addr.PFN { return td.vcpus[i].tdvpr }

func (h *Host) alloc(t *sched.Thread, acct hostmem.Account) (addr.PFN, error) {
	return h.Mem.Alloc(t, hostmem.Request{Order: 0, Source: hostmem.SourceBuddy, Account: acct, Charged: true})
}

// dpamtGet takes a reference on pfn's 2M range's Dynamic PAMT pair,
// installing it with TDH.PHYMEM.PAMT.ADD when the count goes 0 → 1
// (tdx_pamt_get(): pair allocated before the global dpamt_lock spinlock).
func (h *Host) dpamtGet(t *sched.Thread, acct hostmem.Account, pfn addr.PFN) error {
	if !h.Mod.Config().DynamicPAMT {
		return nil
	}
	var pair [2]addr.PFN
	for i := range pair {
		p, err := h.Mem.Alloc(t, hostmem.Request{Order: 0, Source: hostmem.SourceBuddy, Account: acct, Charged: true})
		if err != nil {
			return err
		}
		pair[i] = p
	}
	h.dpamtLock.Lock(t)
	defer h.dpamtLock.Unlock(t)
	key := uint64(pfn >> 9)
	if h.dpamtRef[key] > 0 {
		h.dpamtRef[key]++
		for _, p := range pair {
			h.Mem.Free(t, p, hostmem.SourceBuddy)
		}
		return nil
	}
	// PAMT.ADD takes the 2M PAMT entry exclusively; any SEAMCALL using a page
	// of that range holds it shared, so BUSY here is expected: retry.
	st, _ := retryBusy(t, nil, func() (tdxmodule.Status, tdxmodule.Regs) {
		return first(tdxcall.PhymemPAMTAdd(h.Mod, t, pfn, pair)), tdxmodule.Regs{}
	})
	if st != tdxmodule.Success {
		return fmt.Errorf("TDH.PHYMEM.PAMT.ADD: %v", st)
	}
	h.dpamtRef[key] = 1
	return nil
}

// dpamtPut drops a reference; at 1 → 0 it removes the pair with
// TDH.PHYMEM.PAMT.REMOVE and frees the two pages (tdx_pamt_put()). A
// failed removal is loud in the kernel (WARN, pages leaked); here an error.
func (h *Host) dpamtPut(t *sched.Thread, pfn addr.PFN) error {
	if !h.Mod.Config().DynamicPAMT {
		return nil
	}
	h.dpamtLock.Lock(t)
	defer h.dpamtLock.Unlock(t)
	key := uint64(pfn >> 9)
	switch h.dpamtRef[key] {
	case 0:
		return fmt.Errorf("Dynamic PAMT refcount underflow for the 2M range at %s", (pfn &^ 511).HPA())
	case 1:
	default:
		h.dpamtRef[key]--
		return nil
	}
	st, out := retryBusy(t, nil, func() (tdxmodule.Status, tdxmodule.Regs) {
		return tdxcall.PhymemPAMTRemove(h.Mod, t, pfn)
	})
	if st != tdxmodule.Success {
		return fmt.Errorf("TDH.PHYMEM.PAMT.REMOVE: %v", st)
	}
	delete(h.dpamtRef, key)
	h.Mem.Free(t, addr.HPA(out.RDX).PFN(), hostmem.SourceBuddy)
	h.Mem.Free(t, addr.HPA(out.R8).PFN(), hostmem.SourceBuddy)
	return nil
}

// controlPage allocates a 4K page to hand to the module, with its DPAMT pair.
func (h *Host) controlPage(t *sched.Thread, acct hostmem.Account) (addr.PFN, error) {
	p, err := h.alloc(t, acct)
	if err != nil {
		return 0, err
	}
	return p, h.dpamtGet(t, acct, p)
}

func check(what string, st tdxmodule.Status) error {
	if st != tdxmodule.Success {
		return fmt.Errorf("%s: %v", what, st)
	}
	return nil
}

// Create builds a TD up to TDH.MNG.INIT and its vCPUs (KVM_TDX_INIT_VM and
// KVM_TDX_INIT_VCPU): TDR, keys on every package, TDCS, TD params, TDVPS.
func (h *Host) Create(t *sched.Thread, name string, vcpus int) (*TD, error) {
	acct, err := h.Mem.NewAccount(name)
	if err != nil {
		return nil, err
	}
	td := &TD{h: h, Acct: acct, septLock: sched.NewMutex("tdhost.sept_lock")}
	for i := 1; i < len(h.hkidUse); i++ {
		if !h.hkidUse[i] {
			td.HKID = i
			break
		}
	}
	if td.HKID == 0 {
		return nil, fmt.Errorf("no free HKID: all %d in use", len(h.hkidUse)-1)
	}
	if td.TDR, err = h.controlPage(t, acct); err != nil {
		return nil, err
	}
	if err := check("TDH.MNG.CREATE", first(tdxcall.MngCreate(h.Mod, t, td.TDR, td.HKID))); err != nil {
		return nil, err
	}
	h.hkidUse[td.HKID] = true
	cfg := h.Mod.Config()
	for pkg := 0; pkg < cfg.Packages; pkg++ {
		if err := check("TDH.MNG.KEY.CONFIG", first(tdxcall.MngKeyConfig(h.Mod, t, td.TDR, pkg))); err != nil {
			return nil, err
		}
	}
	for i := 0; i < cfg.TDCSPages; i++ {
		p, err := h.controlPage(t, acct)
		if err != nil {
			return nil, err
		}
		td.tdcs = append(td.tdcs, p)
		if err := check("TDH.MNG.ADDCX", first(tdxcall.MngAddCX(h.Mod, t, td.TDR, p))); err != nil {
			return nil, err
		}
	}
	if err := check("TDH.MNG.INIT", first(tdxcall.MngInit(h.Mod, t, td.TDR, 4, max(vcpus, 1)))); err != nil {
		return nil, err
	}
	td.sept = make([]map[uint64]addr.PFN, 5)
	for i := range td.sept {
		td.sept[i] = map[uint64]addr.PFN{}
	}
	for i := 0; i < vcpus; i++ {
		var v vcpu
		if v.tdvpr, err = h.controlPage(t, acct); err != nil {
			return nil, err
		}
		if err := check("TDH.VP.CREATE", first(tdxcall.VPCreate(h.Mod, t, td.TDR, v.tdvpr))); err != nil {
			return nil, err
		}
		for j := 0; j < cfg.TDVPSPages-1; j++ {
			p, err := h.controlPage(t, acct)
			if err != nil {
				return nil, err
			}
			v.tdvpx = append(v.tdvpx, p)
			if err := check("TDH.VP.ADDCX", first(tdxcall.VPAddCX(h.Mod, t, v.tdvpr, p))); err != nil {
				return nil, err
			}
		}
		if err := check("TDH.VP.INIT", first(tdxcall.VPInit(h.Mod, t, v.tdvpr))); err != nil {
			return nil, err
		}
		td.vcpus = append(td.vcpus, v)
	}
	return td, nil
}

// retryBusy calls f until it stops returning TDX_OPERAND_BUSY, yielding in
// between (KVM returns -EBUSY and the fault is retried), and counts the
// retries in *retries when it is not nil.
func retryBusy(t *sched.Thread, retries *int, f func() (tdxmodule.Status, tdxmodule.Regs)) (tdxmodule.Status, tdxmodule.Regs) {
	for {
		st, out := f()
		if !st.HasCode(tdxmodule.OperandBusy) {
			return st, out
		}
		if retries != nil {
			*retries++
		}
		t.Yield()
	}
}

// ensureSEPT adds the S-EPT pages needed to map gpa at level leaf.
func (td *TD) ensureSEPT(t *sched.Thread, gpa addr.GPA, leaf addr.Level) error {
	h := td.h
	td.septLock.Lock(t)
	defer td.septLock.Unlock(t)
	for l := addr.Level(3); l > leaf; l-- {
		key := uint64(gpa) >> (12 + 9*uint(l))
		if _, ok := td.sept[l][key]; ok {
			continue
		}
		p, err := h.controlPage(t, td.Acct)
		if err != nil {
			return err
		}
		base := addr.GPA(key << (12 + 9*uint(l)))
		st, _ := retryBusy(t, &td.Retries, func() (tdxmodule.Status, tdxmodule.Regs) {
			return tdxcall.MemSEPTAdd(h.Mod, t, td.TDR, base, l, p)
		})
		if err := check("TDH.MEM.SEPT.ADD", st); err != nil {
			return err
		}
		td.sept[l][key] = p
	}
	return nil
}

// AddImage adds each region page by page with TDH.MEM.PAGE.ADD from a
// source page holding its bytes, and measures it with TDH.MR.EXTEND in
// 256-byte chunks when asked (KVM_TDX_INIT_MEM_REGION).
func (td *TD) AddImage(t *sched.Thread, regions []Region) error {
	h := td.h
	src, err := h.alloc(t, hostmem.AccountHost)
	if err != nil {
		return err
	}
	defer h.Mem.Free(t, src, hostmem.SourceBuddy)
	for _, r := range regions {
		if r.GPA%addr.PageSize != 0 {
			return fmt.Errorf("region at %s is not 4 KiB aligned", r.GPA)
		}
		n := (len(r.Data) + addr.PageSize - 1) / addr.PageSize
		if n == 0 {
			n = 1
		}
		for i := 0; i < n; i++ {
			gpa := r.GPA + addr.GPA(i*addr.PageSize)
			chunk := r.Data[min(i*addr.PageSize, len(r.Data)):min((i+1)*addr.PageSize, len(r.Data))]
			if err := h.Mem.WriteBytes(t, src, chunk, hostmem.MakeTag(0, uint64(gpa)>>12+1)); err != nil {
				return err
			}
			if err := td.ensureSEPT(t, gpa, 0); err != nil {
				return err
			}
			page, err := h.controlPage(t, td.Acct)
			if err != nil {
				return err
			}
			st, _ := tdxcall.MemPageAdd(h.Mod, t, td.TDR, gpa, page, src)
			if err := check(fmt.Sprintf("TDH.MEM.PAGE.ADD(%s)", gpa), st); err != nil {
				h.Mem.Free(t, page, hostmem.SourceBuddy)
				return err
			}
			td.private = append(td.private, page)
			if r.Measure {
				for off := addr.GPA(0); off < addr.PageSize; off += 256 {
					st, _ := tdxcall.MrExtend(h.Mod, t, td.TDR, gpa+off)
					if err := check("TDH.MR.EXTEND", st); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// Finalize is KVM_TDX_FINALIZE_VM.
func (td *TD) Finalize(t *sched.Thread) ([]byte, error) {
	if err := check("TDH.MR.FINALIZE", first(tdxcall.MrFinalize(td.h.Mod, t, td.TDR))); err != nil {
		return nil, err
	}
	info, _ := td.h.Mod.TD(td.TDR)
	return info.MRTD, nil
}

// AcceptRange runs in vCPU i's thread: the guest accepts [gpa, gpa+size)
// at 4K; each EPT violation exits to the host, which maps a page with
// TDH.MEM.PAGE.AUG and re-enters. The guest then writes and reads back a
// tag on every page.
func (td *TD) AcceptRange(t *sched.Thread, i int, gpa addr.GPA, size uint64) error {
	h := td.h
	v := td.vcpus[i]
	if err := check("TDH.VP.ENTER", first(tdxcall.VPEnter(h.Mod, t, v.tdvpr))); err != nil {
		return err
	}
	vc := h.Mod.VCPU(v.tdvpr)
	defer h.Mod.TDExit(vc)
	for g := gpa; g < gpa+addr.GPA(size); g += addr.PageSize {
		for tries := 0; ; tries++ {
			x := h.Mod.Accept(t, vc, uint64(g))
			if x.Kind == tdxmodule.ExitNone && (x.Status == tdxmodule.Success || x.Status.HasCode(tdxmodule.PageAlreadyAccepted)) {
				break
			}
			if tries > 1000 {
				return fmt.Errorf("accept %s: no progress (%v %v)", g, x.Kind, x.Status)
			}
			if x.Kind != tdxmodule.ExitEPTViolation {
				if x.Status.HasCode(tdxmodule.OperandBusy) {
					t.Yield()
					continue
				}
				return fmt.Errorf("accept %s: %v", g, x.Status)
			}
			h.Mod.TDExit(vc)
			if err := td.aug(t, g); err != nil {
				return err
			}
			if err := check("TDH.VP.ENTER", first(tdxcall.VPEnter(h.Mod, t, v.tdvpr))); err != nil {
				return err
			}
		}
		tag := hostmem.MakeTag(uint16(td.HKID), uint64(g)>>12+7)
		if x, _ := h.Mod.Access(t, vc, g, true, tag, false); x.Kind != tdxmodule.ExitNone {
			return fmt.Errorf("write %s after accept: %v", g, x.Kind)
		}
		if x, got := h.Mod.Access(t, vc, g, false, 0, false); x.Kind != tdxmodule.ExitNone || got != tag {
			return fmt.Errorf("read %s: got tag %x want %x (%v)", g, got, tag, x.Kind)
		}
	}
	return nil
}

// aug maps a fresh page at gpa (tdx_sept_set_private_spte → tdh_mem_page_aug).
func (td *TD) aug(t *sched.Thread, gpa addr.GPA) error {
	h := td.h
	if err := td.ensureSEPT(t, gpa, 0); err != nil {
		return err
	}
	page, err := h.controlPage(t, td.Acct)
	if err != nil {
		return err
	}
	st, _ := retryBusy(t, &td.Retries, func() (tdxmodule.Status, tdxmodule.Regs) {
		return tdxcall.MemPageAug(h.Mod, t, td.TDR, gpa, 0, page)
	})
	if st.HasCode(tdxmodule.EPTEntryStateIncorrect) {
		// Another vCPU mapped it first (the fault raced): give the page back.
		h.Mem.Free(t, page, hostmem.SourceBuddy)
		return h.dpamtPut(t, page)
	}
	if err := check("TDH.MEM.PAGE.AUG", st); err != nil {
		return err
	}
	td.septLock.Lock(t)
	td.private = append(td.private, page)
	td.septLock.Unlock(t)
	return nil
}

// RemovePage zaps one private 4K page from a running TD the way KVM does
// (tdx_sept_remove_private_spte): BLOCK, TRACK, kick, REMOVE, WBINVD, then
// the page goes back to the host.
func (td *TD) RemovePage(t *sched.Thread, gpa addr.GPA) error {
	h := td.h
	if err := check("TDH.MEM.RANGE.BLOCK", first(tdxcall.MemRangeBlock(h.Mod, t, td.TDR, gpa, 0))); err != nil {
		return err
	}
	if err := check("TDH.MEM.TRACK", first(tdxcall.MemTrack(h.Mod, t, td.TDR))); err != nil {
		return err
	}
	st, out := tdxcall.MemPageRemove(h.Mod, t, td.TDR, gpa, 0)
	if err := check("TDH.MEM.PAGE.REMOVE", st); err != nil {
		return err
	}
	pfn := addr.HPA(out.RCX &^ (1 << 62)).PFN()
	if err := check("TDH.PHYMEM.PAGE.WBINVD", first(tdxcall.PhymemPageWBInvd(h.Mod, t, pfn, td.HKID))); err != nil {
		return err
	}
	if err := h.Mem.FillTag(t, pfn, 0, 0); err != nil { // tdx_quirk_reset_page
		return err
	}
	td.septLock.Lock(t)
	for i, p := range td.private {
		if p == pfn {
			td.private = append(td.private[:i], td.private[i+1:]...)
			break
		}
	}
	td.septLock.Unlock(t)
	if err := h.Mem.Free(t, pfn, hostmem.SourceBuddy); err != nil {
		return err
	}
	return h.dpamtPut(t, pfn)
}

func first(s tdxmodule.Status, _ tdxmodule.Regs) tdxmodule.Status { return s }

// Teardown releases the HKID (VP.FLUSH, VPFLUSHDONE, CACHE.WB per package,
// KEY.FREEID), then reclaims every page — private, S-EPT, TDVPX, TDVPR,
// TDCS, and the TDR last — and gives it back to the host. It returns the
// number of pages reclaimed.
func (td *TD) Teardown(t *sched.Thread) (int, error) {
	h := td.h
	for _, v := range td.vcpus {
		if st := first(tdxcall.VPFlush(h.Mod, t, v.tdvpr)); st != tdxmodule.Success && !st.HasCode(tdxmodule.VCPUNotAssociated) {
			return 0, check("TDH.VP.FLUSH", st)
		}
	}
	if err := check("TDH.MNG.VPFLUSHDONE", first(tdxcall.MngVPFlushDone(h.Mod, t, td.TDR))); err != nil {
		return 0, err
	}
	for pkg := 0; pkg < h.Mod.Config().Packages; pkg++ {
		if err := check("TDH.PHYMEM.CACHE.WB", first(tdxcall.PhymemCacheWB(h.Mod, t, pkg))); err != nil {
			return 0, err
		}
	}
	if err := check("TDH.MNG.KEY.FREEID", first(tdxcall.MngKeyFreeID(h.Mod, t, td.TDR))); err != nil {
		return 0, err
	}
	h.hkidUse[td.HKID] = false
	var pages []addr.PFN
	pages = append(pages, td.private...)
	for l := len(td.sept) - 1; l >= 0; l-- {
		for _, p := range sortedPages(td.sept[l]) {
			pages = append(pages, p)
		}
	}
	for _, v := range td.vcpus {
		pages = append(pages, v.tdvpx...)
		pages = append(pages, v.tdvpr)
	}
	pages = append(pages, td.tdcs...)
	pages = append(pages, td.TDR)
	for _, p := range pages {
		st, _ := tdxcall.PhymemPageReclaim(h.Mod, t, p)
		if err := check(fmt.Sprintf("TDH.PHYMEM.PAGE.RECLAIM(%s)", p.HPA()), st); err != nil {
			return 0, err
		}
		if err := h.Mem.FillTag(t, p, 0, 0); err != nil {
			return 0, err
		}
		if err := h.Mem.Free(t, p, hostmem.SourceBuddy); err != nil {
			return 0, err
		}
		if err := h.dpamtPut(t, p); err != nil {
			return 0, err
		}
	}
	td.private, td.tdcs, td.vcpus = nil, nil, nil
	return len(pages), nil
}

func sortedPages(m map[uint64]addr.PFN) []addr.PFN {
	var out []addr.PFN
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
}
