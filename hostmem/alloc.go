package hostmem

import (
	"errors"
	"fmt"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/sched"
)

// Errors. Each *Error wraps one of these, so callers test with errors.Is.
var (
	ErrNoMemory     = errors.New("out of memory")
	ErrRange        = errors.New("pfn outside host memory")
	ErrBadRequest   = errors.New("bad allocation request")
	ErrDoubleFree   = errors.New("double free")
	ErrNotHead      = errors.New("not the head of a folio")
	ErrWrongSource  = errors.New("freed into another pool or cache than it came from")
	ErrReferenced   = errors.New("other references are held")
	ErrSplitMapped  = errors.New("folio split while a Secure EPT maps it at a larger size")
	ErrTDXOwned     = errors.New("freed while the TDX module still assigns it to a TD")
	ErrNotAllocated = errors.New("page is not allocated")
	ErrRefUnderflow = errors.New("refcount underflow")
)

// allocWhat names a sleeping allocation for lockdep, by order (formatted
// once, not per allocation).
var allocWhat = func() (w [maxOrder + 1]string) {
	for o := range w {
		w[o] = fmt.Sprintf("alloc_pages(GFP_KERNEL, order %d)", o)
	}
	return w
}()

// Error is a refused operation. Rule names the broken rule as the event
// record and the checks name it (hostmem.double-free, ...).
type Error struct {
	Op     string
	PFN    addr.PFN
	Rule   string
	Err    error
	Cause  error // what made it fail (an injected fault), or nil
	Detail string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("hostmem: %s %s: %v", e.Op, e.PFN, e.Err)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

// Unwrap returns the error kind (ErrNoMemory, ...) and the cause, if any.
func (e *Error) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Cause}
}

// violation records a refused operation as a violation event and returns it.
func (m *Memory) violation(t *sched.Thread, op string, pfn addr.PFN, rule string, err error, detail string) error {
	m.violations++
	e := &Error{Op: op, PFN: pfn, Rule: rule, Err: err, Detail: detail}
	ev := event.Event{Kind: event.KindViolation, Name: rule, Detail: e.Error(), Args: [4]uint64{uint64(pfn)}}
	t.Stamp(&ev)
	m.sink.Emit(ev)
	return e
}

// Alloc allocates a folio of 1<<r.Order pages with refcount 1, zero tags,
// from the buddy allocator or (SourceHuge2M/1G) from a hugetlb pool.
// Kernel: alloc_pages() / alloc_hugetlb_folio().
func (m *Memory) Alloc(t *sched.Thread, r Request) (addr.PFN, error) {
	if r.Order > maxOrder {
		return 0, &Error{Op: "alloc", Err: ErrBadRequest, Detail: fmt.Sprintf("order %d > %d", r.Order, maxOrder)}
	}
	if !r.Atomic {
		t.MightSleep(allocWhat[min(int(r.Order), len(allocWhat)-1)])
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if int(r.Account) >= len(m.accounts) {
		return 0, &Error{Op: "alloc", Err: ErrBadRequest, Detail: fmt.Sprintf("unknown account %d", r.Account)}
	}
	if m.failAlloc != nil {
		if cause := m.failAlloc(m.sourceName(r.Source), r.Order); cause != nil {
			return 0, &Error{Op: "alloc", Err: ErrNoMemory, Cause: cause, Detail: cause.Error()}
		}
	}
	if r.Source == 0 || int(r.Source) >= len(m.sources) {
		return 0, &Error{Op: "alloc", Err: ErrBadRequest, Detail: fmt.Sprintf("unknown source %d", r.Source)}
	}
	var pfn addr.PFN
	switch r.Source {
	case SourceHuge2M, SourceHuge1G:
		want := addr.Order(chunkOrder)
		pool := &m.pool2M
		if r.Source == SourceHuge1G {
			want, pool = sectionOrder, &m.pool1G
		}
		if r.Order != want {
			return 0, &Error{Op: "alloc", Err: ErrBadRequest,
				Detail: fmt.Sprintf("%s hands out order %d, not %d", m.sourceName(r.Source), want, r.Order)}
		}
		if len(*pool) == 0 {
			return 0, &Error{Op: "alloc", Err: ErrNoMemory, Detail: m.sourceName(r.Source) + " pool empty"}
		}
		pfn = (*pool)[len(*pool)-1]
		*pool = (*pool)[:len(*pool)-1]
	default:
		var err error
		pfn, err = m.takeBlock(r.Order)
		if err != nil {
			return 0, &Error{Op: "alloc", Err: err, Detail: fmt.Sprintf("order %d, %d pages free", r.Order, m.freePages)}
		}
	}
	m.setBlock(pfn, r.Order, pageMeta{of: packOf(r.Order, stAlloc, r.Charged), acct: r.Account, src: r.Source})
	ref := int32(1)
	if r.GetRef {
		ref = 2
	}
	m.setHead(pfn, func(p *pageMeta) { p.ref = ref })
	m.charge(r.Account, r.Charged, int64(1)<<r.Order)
	if m.sink == event.Discard {
		return pfn, nil // nobody listens: skip building and stamping the event
	}
	ev := event.Event{Kind: event.KindAlloc, Name: m.sourceName(r.Source), Args: [4]uint64{uint64(pfn), uint64(r.Order), uint64(r.Account)}}
	t.Stamp(&ev)
	m.sink.Emit(ev)
	return pfn, nil
}

func (m *Memory) charge(a Account, charged bool, pages int64) {
	u := &m.usage[a]
	if charged {
		u.Charged = uint64(int64(u.Charged) + pages)
	} else {
		u.Uncharged = uint64(int64(u.Uncharged) + pages)
	}
}

// folioHead finds the allocated folio containing pfn.
func (m *Memory) folioHead(pfn addr.PFN) (addr.PFN, pageMeta, bool) {
	p := m.meta(pfn)
	if p.state() != stAlloc {
		return 0, p, false
	}
	head := pfn &^ (addr.PFN(1)<<p.order() - 1)
	return head, m.meta(head), true
}

// Free gives back the folio headed by pfn to src, where it must have come
// from. The folio's own reference (refcount 1) is the only one allowed; a
// double free, a free into another pool, a free of a referenced folio and a
// free of a page the TDX module still assigns are refused, recorded as
// violations, and change nothing.
// Kernel: __free_pages() / free_huge_folio(); the checks are the model's.
func (m *Memory) Free(t *sched.Thread, pfn addr.PFN, src Source) error {
	// Ask the guard first, without holding mu: the TDX module calls into
	// hostmem while holding its own lock, so hostmem must never call the
	// module while holding mu (lock order: module, then hostmem).
	// One lock round for the folio and the guard, not three.
	var vetoed error
	m.mu.Lock()
	headOrder, isHead := m.headOrder(pfn)
	g := m.guard
	m.mu.Unlock()
	if isHead && g != nil {
		vetoed = g.CheckFree(pfn, headOrder)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.freeLocked(t, pfn, src, vetoed)
}

// headOrder is the order of the allocated folio pfn heads, if it heads
// one. m.mu is held.
func (m *Memory) headOrder(pfn addr.PFN) (addr.Order, bool) {
	if pfn < m.npages {
		if head, hp, ok := m.folioHead(pfn); ok && head == pfn {
			return hp.order(), true
		}
	}
	return 0, false
}

// freeLocked is Free under m.mu, with the guard's answer (vetoed) already asked.
func (m *Memory) freeLocked(t *sched.Thread, pfn addr.PFN, src Source, vetoed error) error {
	if pfn >= m.npages {
		return &Error{Op: "free", PFN: pfn, Rule: RuleRange, Err: ErrRange}
	}
	p := m.meta(pfn)
	switch p.state() {
	case stAlloc:
	case stNone, stFreeHead, stPooled:
		return m.violation(t, "free", pfn, RuleDoubleFree, ErrDoubleFree, "page is already free")
	}
	order := p.order()
	if pfn&(addr.PFN(1)<<order-1) != 0 {
		return &Error{Op: "free", PFN: pfn, Rule: RuleNotHead, Err: ErrNotHead,
			Detail: fmt.Sprintf("inside an order-%d folio", order)}
	}
	if p.src != src {
		return m.violation(t, "free", pfn, RuleWrongSource, ErrWrongSource,
			fmt.Sprintf("came from %s, freed to %s", m.sourceName(p.src), m.sourceName(src)))
	}
	if p.ref != 1 {
		return m.violation(t, "free", pfn, RuleFreeReferenced, ErrReferenced,
			fmt.Sprintf("refcount %d", p.ref))
	}
	if (src == SourceHuge2M && order != chunkOrder) || (src == SourceHuge1G && order != sectionOrder) {
		return &Error{Op: "free", PFN: pfn, Rule: RulePartialHuge, Err: ErrBadRequest,
			Detail: fmt.Sprintf("order-%d piece of a %s page: merge it first", order, m.sourceName(src))}
	}
	if vetoed != nil {
		return m.violation(t, "free", pfn, RuleFreeTDXOwned, ErrTDXOwned, vetoed.Error())
	}
	m.charge(p.acct, p.charged(), -(int64(1) << order))
	m.dropBytes(pfn, order)
	switch src {
	case SourceHuge2M:
		m.setBlock(pfn, order, pageMeta{of: packOf(order, stPooled, false), src: src})
		m.pool2M = append(m.pool2M, pfn)
	case SourceHuge1G:
		m.setBlock(pfn, order, pageMeta{of: packOf(order, stPooled, false), src: src})
		m.pool1G = append(m.pool1G, pfn)
	default:
		m.giveBlock(pfn, order)
	}
	if m.sink == event.Discard {
		return nil
	}
	ev := event.Event{Kind: event.KindFree, Name: m.sourceName(src), Args: [4]uint64{uint64(pfn), uint64(order), uint64(p.acct)}}
	t.Stamp(&ev)
	m.sink.Emit(ev)
	return nil
}

// Vetoed reports whether the guard would refuse to free the folio headed
// by pfn now (the TDX module still assigns a page of it), without freeing
// it or recording anything. Callers that keep such a folio aside use it to
// retry quietly.
func (m *Memory) Vetoed(pfn addr.PFN) bool {
	f, ok := m.FolioOf(pfn)
	if !ok {
		return false
	}
	m.mu.Lock()
	g := m.guard
	m.mu.Unlock()
	return g != nil && g.CheckFree(f.Head, f.Order) != nil
}

// Get takes a reference on the folio containing pfn (folio_get).
func (m *Memory) Get(pfn addr.PFN) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	head, _, ok := m.folioHead(pfn)
	if !ok || pfn >= m.npages {
		return &Error{Op: "get", PFN: pfn, Err: ErrNotAllocated}
	}
	m.setHead(head, func(p *pageMeta) { p.ref++ })
	return nil
}

// GetFolio takes a reference on the folio containing pfn, as Get does, and
// returns the folio (with the new refcount): folio_get() and folio_order()
// of one lookup, for the fault path.
func (m *Memory) GetFolio(pfn addr.PFN) (Folio, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.getFolio(pfn)
}

// getFolio is GetFolio under m.mu.
func (m *Memory) getFolio(pfn addr.PFN) (Folio, error) {
	head, hp, ok := m.folioHead(pfn)
	if !ok || pfn >= m.npages {
		return Folio{}, &Error{Op: "get", PFN: pfn, Err: ErrNotAllocated}
	}
	hp.ref++
	m.setHead(head, func(p *pageMeta) { p.ref = hp.ref })
	return Folio{Head: head, Order: hp.order(), Ref: hp.ref, Source: hp.src, Account: hp.acct, Charged: hp.charged()}, nil
}

// ClearGetFolio is the fault path's SetTag(pfn, 0) when clear (the
// page's clear_highpage) and GetFolio, in one lock round and one lookup
// of the folio: kvm_gmem_get_pfn()'s clear and folio_get().
func (m *Memory) ClearGetFolio(t *sched.Thread, pfn addr.PFN, clear bool) (Folio, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if clear {
		if err := m.fillTag(t, pfn, 0, 0); err != nil {
			return Folio{}, err
		}
	}
	return m.getFolio(pfn)
}

// Put drops a reference taken with Get (folio_put). Dropping the folio's own
// last reference is Free's job, so Put never takes the count below 1.
func (m *Memory) Put(t *sched.Thread, pfn addr.PFN) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	head, hp, ok := m.folioHead(pfn)
	if !ok || pfn >= m.npages {
		return &Error{Op: "put", PFN: pfn, Err: ErrNotAllocated}
	}
	if hp.ref <= 1 {
		return m.violation(t, "put", pfn, RuleRefUnderflow, ErrRefUnderflow,
			fmt.Sprintf("refcount %d", hp.ref))
	}
	m.setHead(head, func(p *pageMeta) { p.ref-- })
	return nil
}

// GetPages takes one reference per page of [pfn, pfn+n) on the folio
// holding each page (get_page on every 4 KiB page of a mapping), folio by
// folio. Nothing is taken when a page is not allocated.
func (m *Memory) GetPages(pfn addr.PFN, n uint64) error {
	return m.addPageRefs(nil, pfn, n, 1)
}

// PutPages drops references taken with GetPages (put_page on each page).
func (m *Memory) PutPages(t *sched.Thread, pfn addr.PFN, n uint64) error {
	return m.addPageRefs(t, pfn, n, -1)
}

func (m *Memory) addPageRefs(t *sched.Thread, pfn addr.PFN, n uint64, sign int32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	type run struct {
		head addr.PFN
		refs int32
	}
	runs := make([]run, 0, 4) // on the stack for the usual one or two folios
	for p, end := pfn, pfn+addr.PFN(n); p < end; {
		head, hp, ok := m.folioHead(p)
		if !ok || p >= m.npages {
			return &Error{Op: "get", PFN: p, Err: ErrNotAllocated}
		}
		next := min(head+addr.PFN(1)<<hp.order(), end)
		k := int32(next - p)
		if sign < 0 && hp.ref-k < 1 {
			return m.violation(t, "put", p, RuleRefUnderflow, ErrRefUnderflow,
				fmt.Sprintf("refcount %d, dropping %d", hp.ref, k))
		}
		runs = append(runs, run{head, sign * k})
		p = next
	}
	for _, r := range runs {
		m.setHead(r.head, func(p *pageMeta) { p.ref += r.refs })
	}
	return nil
}

// Folio describes the allocated folio holding a page.
type Folio struct {
	Head    addr.PFN
	Order   addr.Order
	Ref     int32
	Source  Source
	Account Account
	Charged bool
}

// FolioOf returns the folio holding pfn, or false when the page is free or
// pooled.
func (m *Memory) FolioOf(pfn addr.PFN) (Folio, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if pfn >= m.npages {
		return Folio{}, false
	}
	head, hp, ok := m.folioHead(pfn)
	if !ok {
		return Folio{}, false
	}
	return Folio{Head: head, Order: hp.order(), Ref: hp.ref, Source: hp.src, Account: hp.acct, Charged: hp.charged()}, true
}

// IsAllocated reports whether pfn belongs to an allocated folio.
func (m *Memory) IsAllocated(pfn addr.PFN) bool {
	_, ok := m.FolioOf(pfn)
	return ok
}

// SplitFolio splits the folio headed by pfn into folios of newOrder, each
// with refcount 1, the same source, account and charge. Like
// split_folio_to_order(), it fails (changing nothing) when anyone but the
// owner holds a reference.
func (m *Memory) SplitFolio(t *sched.Thread, pfn addr.PFN, newOrder addr.Order) error {
	m.mu.Lock()
	g, _ := m.guard.(SplitGuard)
	m.mu.Unlock()
	if g != nil {
		if f, ok := m.FolioOf(pfn); ok && f.Head == pfn && newOrder < f.Order {
			if err := g.CheckSplit(pfn, f.Order, newOrder); err != nil {
				m.mu.Lock()
				_ = m.violation(t, "split", pfn, RuleSplitMappedHuge, ErrSplitMapped, err.Error())
				m.mu.Unlock()
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	head, hp, ok := m.folioHead(pfn)
	if !ok || head != pfn {
		return &Error{Op: "split", PFN: pfn, Err: ErrNotHead}
	}
	if newOrder >= hp.order() {
		return &Error{Op: "split", PFN: pfn, Err: ErrBadRequest,
			Detail: fmt.Sprintf("new order %d not below %d", newOrder, hp.order())}
	}
	if hp.ref != 1 {
		return &Error{Op: "split", PFN: pfn, Err: ErrReferenced, Detail: fmt.Sprintf("refcount %d", hp.ref)}
	}
	m.retag(pfn, hp.order(), func(p *pageMeta) { p.of = packOf(newOrder, stAlloc, hp.charged()); p.ref = 0 })
	for h := pfn; h < pfn+addr.PFN(1)<<hp.order(); h += addr.PFN(1) << newOrder {
		m.setHead(h, func(p *pageMeta) { p.ref = 1 })
	}
	return nil
}

// MergeFolio joins the aligned folios of one source and account covering
// [pfn, pfn+2^order) back into one folio (guest_memfd restoring a huge page
// after conversion). Every piece must be allocated, unreferenced by others,
// and alike.
func (m *Memory) MergeFolio(t *sched.Thread, pfn addr.PFN, order addr.Order) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if order > maxOrder || pfn&(addr.PFN(1)<<order-1) != 0 || pfn+addr.PFN(1)<<order > m.npages {
		return &Error{Op: "merge", PFN: pfn, Err: ErrBadRequest, Detail: fmt.Sprintf("order %d block not aligned or out of range", order)}
	}
	first := m.meta(pfn)
	for h := pfn; h < pfn+addr.PFN(1)<<order; {
		head, hp, ok := m.folioHead(h)
		if !ok || head != h || hp.order() >= order || hp.src != first.src || hp.acct != first.acct || hp.charged() != first.charged() {
			return &Error{Op: "merge", PFN: h, Err: ErrBadRequest, Detail: "pieces are not alike allocated folios inside the block"}
		}
		if hp.ref != 1 {
			return &Error{Op: "merge", PFN: h, Err: ErrReferenced, Detail: fmt.Sprintf("refcount %d", hp.ref)}
		}
		h += addr.PFN(1) << hp.order()
	}
	m.retag(pfn, order, func(p *pageMeta) { p.of = packOf(order, stAlloc, first.charged()); p.ref = 0 })
	m.setHead(pfn, func(p *pageMeta) { p.ref = 1 })
	return nil
}

// retag applies f to every page of a block, keeping per-page tags.
func (m *Memory) retag(pfn addr.PFN, order addr.Order, f func(*pageMeta)) {
	for c := pfn &^ (chunkPages - 1); c < pfn+addr.PFN(1)<<order; c += chunkPages {
		ch := m.chunkOf(c)
		if ch.pages == nil && order >= chunkOrder {
			f(&ch.big)
			continue
		}
		if ch.pages == nil {
			m.expand(ch)
		}
		lo, hi := addr.PFN(0), addr.PFN(chunkPages)
		if order < chunkOrder {
			lo = pfn & (chunkPages - 1)
			hi = lo + addr.PFN(1)<<order
		}
		for i := lo; i < hi; i++ {
			f(&ch.pages[i])
		}
	}
}

// SetTag records that the page at pfn now holds content tag. Writing a page
// that is not allocated is a use-after-free and is refused.
func (m *Memory) SetTag(t *sched.Thread, pfn addr.PFN, tag Tag) error {
	return m.FillTag(t, pfn, 0, tag)
}

// FillTag sets the tag of every page in an aligned block (zeroing a 2 MiB
// page at accept is FillTag(pfn, 9, 0)). Huge blocks stay one record.
func (m *Memory) FillTag(t *sched.Thread, pfn addr.PFN, order addr.Order, tag Tag) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fillTag(t, pfn, order, tag)
}

// fillTag is FillTag under m.mu.
func (m *Memory) fillTag(t *sched.Thread, pfn addr.PFN, order addr.Order, tag Tag) error {
	if order > maxOrder || pfn&(addr.PFN(1)<<order-1) != 0 || pfn+addr.PFN(1)<<order > m.npages {
		return &Error{Op: "write", PFN: pfn, Err: ErrBadRequest, Detail: "block not aligned or out of range"}
	}
	if p := m.meta(pfn); p.state() != stAlloc {
		return m.violation(t, "write", pfn, RuleWriteUnallocated, ErrNotAllocated,
			"content written to a page that is not allocated")
	}
	m.dropBytes(pfn, order)
	if order >= chunkOrder {
		for c := pfn; c < pfn+addr.PFN(1)<<order; c += chunkPages {
			ch := m.chunkOf(c)
			switch {
			case ch.pages == nil:
				ch.tag = tag
			case ch.pages[0].order() >= chunkOrder:
				// One huge folio expanded only for per-page tags: whole again.
				m.collapse(ch, ch.pages[0], tag)
			default:
				ch.setTags(0, chunkPages, tag)
			}
		}
		return nil
	}
	ch := m.chunkOf(pfn)
	if ch.pages == nil && ch.tag == tag {
		return nil
	}
	if ch.pages == nil {
		m.expand(ch)
	}
	base := pfn & (chunkPages - 1)
	ch.setTags(base, base+addr.PFN(1)<<order, tag)
	return nil
}

// Tag returns the content tag of one page.
func (m *Memory) Tag(pfn addr.PFN) Tag {
	m.mu.Lock()
	defer m.mu.Unlock()
	if pfn >= m.npages {
		return 0
	}
	return m.tagOf(pfn)
}
