package hostmem

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/sched"
)

// Real bytes are kept only for the few pages whose content matters byte for
// byte: a TD's initial image, which TDH.MR.EXTEND measures. Everything else
// carries only its tag. Writing a tag, or freeing, drops a page's bytes.

// WriteBytes stores up to 4 KiB of real content in an allocated page (the
// rest of the page is zero) and sets its tag.
func (m *Memory) WriteBytes(t *sched.Thread, pfn addr.PFN, data []byte, tag Tag) error {
	if err := m.SetTag(t, pfn, tag); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(data) > addr.PageSize {
		data = data[:addr.PageSize]
	}
	page := new([addr.PageSize]byte)
	copy(page[:], data)
	if m.bytes == nil {
		m.bytes = map[addr.PFN]*[addr.PageSize]byte{}
	}
	m.bytes[pfn] = page
	return nil
}

// Bytes returns a page's stored content, or nil when only its tag is known
// (a zero tag means a zeroed page).
func (m *Memory) Bytes(pfn addr.PFN) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b := m.bytes[pfn]; b != nil {
		return b[:]
	}
	return nil
}

// CopyPage copies one page's tag and stored bytes to another (MOVDIR64B of
// TDH.MEM.PAGE.ADD, copy_page()). Both pages must be allocated.
func (m *Memory) CopyPage(t *sched.Thread, dst, src addr.PFN) error {
	m.mu.Lock()
	if src >= m.npages || m.meta(src).state() != stAlloc {
		m.mu.Unlock()
		return m.violationLocked(t, "copy", src, RuleReadUnallocated, ErrNotAllocated, "copy source is not allocated")
	}
	tag := m.tagOf(src)
	b := m.bytes[src]
	m.mu.Unlock()
	if err := m.SetTag(t, dst, tag); err != nil {
		return err
	}
	if b != nil {
		m.mu.Lock()
		cp := *b
		m.bytes[dst] = &cp
		m.mu.Unlock()
	}
	return nil
}

func (m *Memory) violationLocked(t *sched.Thread, op string, pfn addr.PFN, rule string, err error, detail string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.violation(t, op, pfn, rule, err, detail)
}

// dropBytes forgets stored content in a block (caller holds mu).
func (m *Memory) dropBytes(pfn addr.PFN, order addr.Order) {
	if len(m.bytes) == 0 {
		return
	}
	if order == 0 {
		delete(m.bytes, pfn)
		return
	}
	for p := range m.bytes {
		if p >= pfn && p < pfn+addr.PFN(1)<<order {
			delete(m.bytes, p)
		}
	}
}
