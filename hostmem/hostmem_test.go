package hostmem

import (
	"errors"
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
)

func newMem(t testing.TB, cfg Config) (*Memory, *event.Counter) {
	t.Helper()
	c := event.NewCounter()
	m, err := New(cfg, c)
	if err != nil {
		t.Fatal(err)
	}
	return m, c
}

func TestBuddyCoalescesBackToHugeBlocks(t *testing.T) {
	m, _ := newMem(t, Config{Bytes: 8 << 20})
	total := m.Pages()
	var pfns []addr.PFN
	for {
		p, err := m.Alloc(nil, Request{Order: 0, Source: SourceBuddy})
		if errors.Is(err, ErrNoMemory) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pfns = append(pfns, p)
	}
	if uint64(len(pfns)) != total || m.FreePages() != 0 {
		t.Fatalf("allocated %d of %d pages, %d free", len(pfns), total, m.FreePages())
	}
	seen := map[addr.PFN]bool{}
	for _, p := range pfns {
		if seen[p] || uint64(p) >= total {
			t.Fatalf("pfn %d handed out twice or out of range", p)
		}
		seen[p] = true
	}
	// Free in an interleaved order so coalescing has to merge both ways.
	for i := 0; i < len(pfns); i += 2 {
		if err := m.Free(nil, pfns[i], SourceBuddy); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < len(pfns); i += 2 {
		if err := m.Free(nil, pfns[i], SourceBuddy); err != nil {
			t.Fatal(err)
		}
	}
	if m.FreePages() != total {
		t.Fatalf("free %d, want %d", m.FreePages(), total)
	}
	// Everything merged back: four 2 MiB blocks are available.
	for i := 0; i < 4; i++ {
		if _, err := m.Alloc(nil, Request{Order: 9, Source: SourceBuddy}); err != nil {
			t.Fatalf("2 MiB block %d after coalescing: %v", i, err)
		}
	}
	if m.expanded != 0 {
		t.Fatalf("%d chunk page arrays still live after the memory was whole again", m.expanded)
	}
}

func TestFourTiBIsCheap(t *testing.T) {
	m, _ := newMem(t, Config{Bytes: 4 << 40})
	if m.Pages() != 1<<30 {
		t.Fatalf("pages %d", m.Pages())
	}
	before := m.StateBytes()
	p, err := m.Alloc(nil, Request{Order: 0, Source: SourceBuddy})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Alloc(nil, Request{Order: 18, Source: SourceBuddy}); err != nil {
		t.Fatal(err)
	}
	after := m.StateBytes()
	if after > 1<<20 {
		t.Fatalf("4 TiB with two allocations costs %d bytes of model state (before: %d)", after, before)
	}
	if err := m.Free(nil, p, SourceBuddy); err != nil {
		t.Fatal(err)
	}
	if m.sectionsLive != 2 || m.expanded != 0 {
		t.Fatalf("%d sections and %d page arrays live after freeing the 4 KiB page", m.sectionsLive, m.expanded)
	}
}

func TestHugePools(t *testing.T) {
	m, c := newMem(t, Config{Bytes: 4 << 30, Huge2M: 3, Huge1G: 1})
	if f2, f1 := m.PoolFree(); f2 != 3 || f1 != 1 {
		t.Fatalf("pools %d/%d", f2, f1)
	}
	if m.FreePages() != (4<<30-3*(2<<20)-(1<<30))/addr.PageSize {
		t.Fatalf("pool pages still counted free: %d", m.FreePages())
	}
	p2, err := m.Alloc(nil, Request{Order: 9, Source: SourceHuge2M})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Alloc(nil, Request{Order: 0, Source: SourceHuge2M}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("order-0 from the 2M pool: %v", err)
	}
	// Freeing a pool page to the buddy allocator is refused and recorded.
	err = m.Free(nil, p2, SourceBuddy)
	var he *Error
	if !errors.As(err, &he) || !errors.Is(err, ErrWrongSource) || he.Rule != RuleWrongSource {
		t.Fatalf("free to buddy: %v", err)
	}
	if v := c.Violations(); len(v) != 1 || v[0].Name != RuleWrongSource {
		t.Fatalf("violations %v", v)
	}
	if err := m.Free(nil, p2, SourceHuge2M); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := m.Alloc(nil, Request{Order: 9, Source: SourceHuge2M}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Alloc(nil, Request{Order: 9, Source: SourceHuge2M}); !errors.Is(err, ErrNoMemory) {
		t.Fatalf("empty pool: %v", err)
	}
	p1, err := m.Alloc(nil, Request{Order: 18, Source: SourceHuge1G})
	if err != nil || p1&(1<<18-1) != 0 {
		t.Fatalf("1G pool page %d: %v", p1, err)
	}
	// A split piece cannot go back to the pool; merged it can.
	if err := m.SplitFolio(nil, p1, 9); err != nil {
		t.Fatal(err)
	}
	if err := m.Free(nil, p1, SourceHuge1G); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("free of a split piece: %v", err)
	}
	if err := m.MergeFolio(nil, p1, 18); err != nil {
		t.Fatal(err)
	}
	if err := m.Free(nil, p1, SourceHuge1G); err != nil {
		t.Fatal(err)
	}
}

func TestFreeViolationsChangeNothing(t *testing.T) {
	m, c := newMem(t, Config{Bytes: 64 << 20})
	p, _ := m.Alloc(nil, Request{Order: 2, Source: SourceBuddy})
	if err := m.Free(nil, p+1, SourceBuddy); !errors.Is(err, ErrNotHead) {
		t.Fatalf("free of a tail: %v", err)
	}
	if err := m.Get(p + 3); err != nil {
		t.Fatal(err)
	}
	if err := m.Free(nil, p, SourceBuddy); !errors.Is(err, ErrReferenced) {
		t.Fatalf("free with a pin: %v", err)
	}
	if f, _ := m.FolioOf(p + 2); f.Head != p || f.Ref != 2 || f.Order != 2 {
		t.Fatalf("folio after refused free: %+v", f)
	}
	if err := m.Put(nil, p+1); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(nil, p); !errors.Is(err, ErrRefUnderflow) {
		t.Fatalf("put below the owner's reference: %v", err)
	}
	if err := m.Free(nil, p, SourceBuddy); err != nil {
		t.Fatal(err)
	}
	if err := m.Free(nil, p, SourceBuddy); !errors.Is(err, ErrDoubleFree) {
		t.Fatalf("double free: %v", err)
	}
	if err := m.SetTag(nil, p, MakeTag(1, 1)); !errors.Is(err, ErrNotAllocated) {
		t.Fatalf("write after free: %v", err)
	}
	if err := m.Free(nil, addr.PFN(m.Pages()), SourceBuddy); !errors.Is(err, ErrRange) {
		t.Fatalf("free out of range: %v", err)
	}
	var rules []string
	for _, v := range c.Violations() {
		rules = append(rules, v.Name)
	}
	want := []string{RuleFreeReferenced, RuleRefUnderflow, RuleDoubleFree, RuleWriteUnallocated}
	if fmt.Sprint(rules) != fmt.Sprint(want) {
		t.Fatalf("violations %v, want %v", rules, want)
	}
	if m.FreePages() != m.Pages() {
		t.Fatalf("memory leaked: %d of %d free", m.FreePages(), m.Pages())
	}
}

type vetoAll struct{ pfn addr.PFN }

func (v vetoAll) CheckFree(pfn addr.PFN, order addr.Order) error {
	if pfn <= v.pfn && v.pfn < pfn+addr.PFN(1)<<order {
		return fmt.Errorf("PAMT: %s is PT_REG of TD 1", v.pfn)
	}
	return nil
}

func TestGuardVetoesFreeOfTDXPage(t *testing.T) {
	m, c := newMem(t, Config{Bytes: 64 << 20})
	p, _ := m.Alloc(nil, Request{Order: 9, Source: SourceBuddy})
	m.SetGuard(vetoAll{p + 5})
	if err := m.Free(nil, p, SourceBuddy); !errors.Is(err, ErrTDXOwned) {
		t.Fatalf("free of TDX-owned page: %v", err)
	}
	if !m.IsAllocated(p) || len(c.Violations()) != 1 {
		t.Fatal("refused free changed state or was not recorded")
	}
}

func TestAccounting(t *testing.T) {
	m, _ := newMem(t, Config{Bytes: 64 << 20})
	vm, _ := m.NewAccount("vm1")
	a, _ := m.Alloc(nil, Request{Order: 9, Source: SourceBuddy, Account: vm, Charged: true})
	b, _ := m.Alloc(nil, Request{Order: 0, Source: SourceBuddy, Account: vm})
	if u := m.Usage(vm); u.Charged != 512 || u.Uncharged != 1 {
		t.Fatalf("usage %+v", u)
	}
	if err := m.SplitFolio(nil, a, 0); err != nil {
		t.Fatal(err)
	}
	for i := addr.PFN(0); i < 512; i++ {
		if err := m.Free(nil, a+i, SourceBuddy); err != nil {
			t.Fatal(err)
		}
	}
	m.Free(nil, b, SourceBuddy)
	if u := m.Usage(vm); u != (Usage{}) {
		t.Fatalf("usage after free %+v", u)
	}
	if _, err := m.Alloc(nil, Request{Order: 0, Source: SourceBuddy, Account: 99}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("unknown account: %v", err)
	}
}

func TestTagsAndProvenance(t *testing.T) {
	m, _ := newMem(t, Config{Bytes: 64 << 20})
	cache, _ := m.RegisterSource("kvm_mmu_page_cache")
	p, _ := m.Alloc(nil, Request{Order: 9, Source: SourceBuddy})
	if err := m.SetTag(nil, p+7, MakeTag(3, 9)); err != nil {
		t.Fatal(err)
	}
	if m.Tag(p+7) != MakeTag(3, 9) || m.Tag(p+8) != 0 || m.Tag(p+7).Owner() != 3 {
		t.Fatal("per-page tag inside a 2 MiB folio")
	}
	if err := m.FillTag(nil, p, 9, 0); err != nil {
		t.Fatal(err)
	}
	if m.Tag(p+7) != 0 || m.expanded != 0 {
		t.Fatalf("zeroing the whole folio should make it one record again (expanded %d)", m.expanded)
	}
	q, _ := m.Alloc(nil, Request{Order: 0, Source: cache})
	if f, _ := m.FolioOf(q); m.SourceName(f.Source) != "kvm_mmu_page_cache" {
		t.Fatalf("provenance %v", f)
	}
	if err := m.Free(nil, q, SourceBuddy); !errors.Is(err, ErrWrongSource) {
		t.Fatalf("cache page freed to the buddy: %v", err)
	}
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []Config{{Bytes: 4097}, {Bytes: 128 << 40}, {Bytes: 1 << 30, Huge1G: 2}, {Bytes: 1 << 20, Huge2M: -1}} {
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

// TestBuddyProperty drives random allocations and frees against a reference
// set of live blocks: no two live blocks overlap, every block is aligned,
// the free count balances, and freeing everything restores the start.
func TestBuddyProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		size := uint64(rapid.IntRange(1, 24).Draw(rt, "mib")) << 20
		m, err := New(Config{Bytes: size}, nil)
		if err != nil {
			rt.Fatal(err)
		}
		startArrays := m.expanded // a partial last chunk is expanded from the start
		type blk struct {
			pfn   addr.PFN
			order addr.Order
		}
		var live []blk
		used := uint64(0)
		steps := rapid.IntRange(1, 200).Draw(rt, "steps")
		for i := 0; i < steps; i++ {
			if len(live) > 0 && rapid.Bool().Draw(rt, "free") {
				j := rapid.IntRange(0, len(live)-1).Draw(rt, "victim")
				b := live[j]
				if err := m.Free(nil, b.pfn, SourceBuddy); err != nil {
					rt.Fatalf("free %v: %v", b, err)
				}
				live = append(live[:j], live[j+1:]...)
				used -= 1 << b.order
				continue
			}
			o := addr.Order(rapid.IntRange(0, 10).Draw(rt, "order"))
			p, err := m.Alloc(nil, Request{Order: o, Source: SourceBuddy})
			if errors.Is(err, ErrNoMemory) {
				continue
			}
			if err != nil {
				rt.Fatal(err)
			}
			if p&(addr.PFN(1)<<o-1) != 0 {
				rt.Fatalf("order-%d block at unaligned pfn %d", o, p)
			}
			for _, b := range live {
				if p < b.pfn+addr.PFN(1)<<b.order && b.pfn < p+addr.PFN(1)<<o {
					rt.Fatalf("block %d/%d overlaps live %v", p, o, b)
				}
			}
			live = append(live, blk{p, o})
			used += 1 << o
			if m.FreePages() != m.Pages()-used {
				rt.Fatalf("free %d, want %d", m.FreePages(), m.Pages()-used)
			}
		}
		for _, b := range live {
			if err := m.Free(nil, b.pfn, SourceBuddy); err != nil {
				rt.Fatal(err)
			}
		}
		if m.FreePages() != m.Pages() || m.expanded != startArrays {
			rt.Fatalf("after freeing all: free %d/%d, %d page arrays", m.FreePages(), m.Pages(), m.expanded)
		}
	})
}

func BenchmarkAllocFree4K(b *testing.B) {
	m, _ := newMem(b, Config{Bytes: 64 << 30})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		p, err := m.Alloc(nil, Request{Order: 0, Source: SourceBuddy, Atomic: true})
		if err != nil {
			b.Fatal(err)
		}
		m.Free(nil, p, SourceBuddy)
	}
}

// GetPages takes one reference per page on the folio holding it, across
// folio boundaries; a folio with such references cannot split, and
// PutPages gives them back (the pin_private_pages policy's get_page and
// tdx_unpin).
func TestPageRefsAcrossFolios(t *testing.T) {
	m, c := newMem(t, Config{Bytes: 64 << 20})
	a, _ := m.Alloc(nil, Request{Order: 9, Source: SourceBuddy})
	if err := m.SplitFolio(nil, a, 8); err != nil { // two order-8 folios
		t.Fatal(err)
	}
	if err := m.GetPages(a+200, 100); err != nil { // 56 pages in the first, 44 in the second
		t.Fatal(err)
	}
	f0, _ := m.FolioOf(a)
	f1, _ := m.FolioOf(a + 256)
	if f0.Ref != 1+56 || f1.Ref != 1+44 {
		t.Fatalf("refs %d, %d; want 57, 45", f0.Ref, f1.Ref)
	}
	if err := m.SplitFolio(nil, a, 0); !errors.Is(err, ErrReferenced) {
		t.Fatalf("split of a referenced folio: %v", err)
	}
	if err := m.PutPages(nil, a+200, 100); err != nil {
		t.Fatal(err)
	}
	if err := m.PutPages(nil, a+200, 100); !errors.Is(err, ErrRefUnderflow) || c.Violations()[len(c.Violations())-1].Name != RuleRefUnderflow {
		t.Fatalf("second put: %v", err)
	}
	if f, _ := m.FolioOf(a + 256); f.Ref != 1 {
		t.Fatalf("ref after put %d (a refused put changed a count)", f.Ref)
	}
	if err := m.SplitFolio(nil, a, 0); err != nil {
		t.Fatalf("split after the pins went: %v", err)
	}
	if err := m.GetPages(addr.PFN(m.Pages()), 1); !errors.Is(err, ErrNotAllocated) {
		t.Fatalf("get past the end: %v", err)
	}
}
