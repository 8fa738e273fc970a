package hostmem

import "github.com/tdxsim/tdxsim/addr"

// Page state, two bits of pageMeta.of.
const (
	stNone     = 0 // inside a free block (not its head), or never touched
	stFreeHead = 1 // head of a free buddy block of the recorded order
	stAlloc    = 2 // part of an allocated folio of the recorded order
	stPooled   = 3 // part of a huge page sitting unused in its hugetlb pool
)

const (
	orderMask  = 0x1f
	stateShift = 5
	stateMask  = 0x3 << stateShift
	chargedBit = 0x80
)

// pageMeta is the model's struct page: 8 bytes. The folio refcount is kept
// only at the folio's head; tails carry the order so the head is found by
// aligning down. Content tags live beside it (chunk.tag, chunk.tags):
// most pages hold zeros, and a chunk whose pages all do keeps no tag array.
type pageMeta struct {
	ref  int32
	acct Account
	of   uint8 // order (bits 0-4), state (5-6), charged (7)
	src  Source
}

func (p pageMeta) order() addr.Order { return addr.Order(p.of & orderMask) }
func (p pageMeta) state() uint8      { return (p.of & stateMask) >> stateShift }
func (p pageMeta) charged() bool     { return p.of&chargedBit != 0 }

func packOf(order addr.Order, state uint8, charged bool) uint8 {
	of := uint8(order)&orderMask | state<<stateShift
	if charged {
		of |= chargedBit
	}
	return of
}

// maxSpareArrays bounds the page arrays kept for reuse, so that a chunk
// going back and forth between whole and split does not churn the GC.
const maxSpareArrays = 64

const (
	chunkOrder   = 9  // 2 MiB
	sectionOrder = 18 // 1 GiB
	maxOrder     = 18
	chunkPages   = 1 << chunkOrder
)

// chunk describes 2 MiB of host memory. While pages is nil, big describes
// every page in it (the chunk is part of a free block or folio of order >= 9,
// or one huge folio whose pages all carry the same tag). pages is allocated
// only when the chunk is used below 2 MiB, and dropped when it is whole again.
//
// tags holds per-page tags while pages is set, and only once a page of the
// chunk holds something other than zeros (nil: all zero). Both arrays are
// exactly 4 KiB: a header inside either would put it in Go's 4864-byte
// size class.
type chunk struct {
	big   pageMeta
	tag   Tag // every page's tag while pages is nil
	pages *[chunkPages]pageMeta
	tags  *[chunkPages]Tag
}

// tagOf returns the content tag of one page.
func (m *Memory) tagOf(pfn addr.PFN) Tag {
	s, ok := m.sectionOf(pfn)
	if !ok {
		return 0
	}
	c := &s.chunks[(pfn>>chunkOrder)&(1<<(sectionOrder-chunkOrder)-1)]
	if c.pages == nil {
		return c.tag
	}
	if c.tags == nil {
		return 0
	}
	return c.tags[pfn&(chunkPages-1)]
}

// setTags writes tag over pages [lo, hi) of an expanded chunk.
func (c *chunk) setTags(lo, hi addr.PFN, tag Tag) {
	if c.tags == nil {
		if tag == 0 {
			return
		}
		c.tags = new([chunkPages]Tag)
	}
	for i := lo; i < hi; i++ {
		c.tags[i] = tag
	}
}

// section describes 1 GiB. A nil section in Memory.sections is one free
// order-18 block that nothing has touched: no memory is spent on it.
type section struct {
	chunks [1 << (sectionOrder - chunkOrder)]chunk
}

func (m *Memory) sectionOf(pfn addr.PFN) (*section, bool) {
	s := m.sections[pfn>>sectionOrder]
	return s, s != nil
}

// meta returns the metadata of one page (a copy).
func (m *Memory) meta(pfn addr.PFN) pageMeta {
	s, ok := m.sectionOf(pfn)
	if !ok {
		if pfn&(1<<sectionOrder-1) == 0 {
			return pageMeta{of: packOf(sectionOrder, stFreeHead, false)}
		}
		return pageMeta{}
	}
	c := &s.chunks[(pfn>>chunkOrder)&(1<<(sectionOrder-chunkOrder)-1)]
	if c.pages != nil {
		return c.pages[pfn&(chunkPages-1)]
	}
	p := c.big
	if pfn&(chunkPages-1) != 0 && p.state() == stFreeHead {
		p.of = 0 // only the first page of a free block is its head
	}
	if pfn&(chunkPages-1) != 0 {
		p.ref = 0 // refcount lives at the head page only
	}
	return p
}

// materialize makes sure the section holding pfn exists.
func (m *Memory) materialize(pfn addr.PFN) *section {
	i := pfn >> sectionOrder
	if m.sections[i] == nil {
		s := &section{}
		// An untouched section is one free order-18 block.
		s.chunks[0].big = pageMeta{of: packOf(sectionOrder, stFreeHead, false)}
		m.sections[i] = s
		m.sectionsLive++
	}
	return m.sections[i]
}

func (m *Memory) chunkOf(pfn addr.PFN) *chunk {
	s := m.materialize(pfn)
	return &s.chunks[(pfn>>chunkOrder)&(1<<(sectionOrder-chunkOrder)-1)]
}

// pagePtr returns a pointer to one page's metadata, expanding its chunk.
func (m *Memory) pagePtr(pfn addr.PFN) *pageMeta {
	c := m.chunkOf(pfn)
	if c.pages == nil {
		m.expand(c)
	}
	return &c.pages[pfn&(chunkPages-1)]
}

func (m *Memory) expand(c *chunk) {
	var p *[chunkPages]pageMeta
	if n := len(m.spareArrays); n > 0 {
		p, m.spareArrays = m.spareArrays[n-1], m.spareArrays[:n-1]
	} else {
		p = new([chunkPages]pageMeta)
	}
	tail := c.big
	tail.ref = 0
	if tail.state() == stFreeHead {
		tail.of = 0
	}
	for i := range p {
		p[i] = tail
	}
	p[0] = c.big
	c.pages = p
	if c.tag != 0 {
		c.setTags(0, chunkPages, c.tag)
	}
	c.tag = 0
	m.expanded++
}

func (m *Memory) collapse(c *chunk, head pageMeta, tag Tag) {
	c.tag = tag
	if c.pages != nil {
		c.tags = nil
		if len(m.spareArrays) < maxSpareArrays {
			m.spareArrays = append(m.spareArrays, c.pages)
		}
		c.pages = nil
		m.expanded--
	}
	c.big = head
}

// setBlock gives every page of the aligned block [pfn, pfn+2^order) the
// metadata p (ref zero everywhere; the caller sets the head's refcount).
func (m *Memory) setBlock(pfn addr.PFN, order addr.Order, p pageMeta) {
	p.ref = 0
	if order >= chunkOrder {
		for c := pfn; c < pfn+addr.PFN(1)<<order; c += chunkPages {
			m.collapse(m.chunkOf(c), p, 0)
		}
		return
	}
	c := m.chunkOf(pfn)
	if c.pages == nil {
		m.expand(c)
	}
	base := pfn & (chunkPages - 1)
	for i := base; i < base+addr.PFN(1)<<order; i++ {
		c.pages[i] = p
	}
	c.setTags(base, base+addr.PFN(1)<<order, 0)
	m.maybeCollapse(c)
}

// maybeCollapse drops a chunk's page array when all 512 entries are again
// identical (a whole free or huge unit): memory is given back as it frees.
func (m *Memory) maybeCollapse(c *chunk) {
	if c.pages == nil {
		return
	}
	first := c.pages[0]
	if first.state() == stAlloc || first.state() == stPooled {
		if first.order() < chunkOrder {
			return
		}
	}
	tail := first
	tail.ref = 0
	if tail.state() == stFreeHead {
		tail.of = 0
	}
	// The last page first: a chunk being freed or filled in address
	// order differs there until the very end, which keeps this O(1) per
	// call instead of a 512-entry scan (punch hole of 1 GiB: 1.0 to 3.8 M pages/s).
	if c.pages[chunkPages-1] != tail {
		return
	}
	for i := 1; i < chunkPages-1; i++ {
		if c.pages[i] != tail {
			return
		}
	}
	var tag Tag
	if tags := c.tags; tags != nil {
		tag = tags[0]
		for i := range tags {
			if tags[i] != tag {
				return
			}
		}
	}
	m.collapse(c, first, tag)
}

// setHead updates the head page's metadata (refcount, tag, flags).
func (m *Memory) setHead(pfn addr.PFN, f func(*pageMeta)) {
	c := m.chunkOf(pfn)
	if c.pages != nil {
		f(&c.pages[pfn&(chunkPages-1)])
		return
	}
	if pfn&(chunkPages-1) == 0 {
		f(&c.big)
		return
	}
	f(m.pagePtr(pfn))
}
