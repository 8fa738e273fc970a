package hostmem

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/sched"
)

// Released says what ReleaseFolios did with one folio.
type Released uint8

// ReleaseFolios outcomes.
const (
	ReleaseFreed   Released = iota // freed
	ReleaseHeld                    // someone else holds a reference: not freed
	ReleaseVetoed                  // refused: the TDX module still assigns it (a violation, as Free records)
	ReleaseSkipped                 // not reached: an earlier folio's free failed
)

// ReleaseFolios drops the page cache's reference on each folio headed by
// heads[i] (filemap_remove_folio + folio_put over a truncated range): a
// folio someone else also references is left alone (ReleaseHeld), any
// other is given to Free's checks and freed to src. out[i] says which; it
// must be as long as heads. It stops at the first free that fails other
// than by the guard's veto and returns that error, the folios after it
// ReleaseSkipped. The outcome, the events and the violations are those
// of asking FolioOf and then Free for each folio in turn; the lock is
// taken twice for the whole batch, not three times a folio, and the guard
// is asked outside it as Free asks it. Kernel: truncate_inode_pages_range()
// freeing a folio batch (folio_batch_release).
func (m *Memory) ReleaseFolios(t *sched.Thread, heads []addr.PFN, src Source, out []Released) error {
	var orders [64]addr.Order
	var isHead [64]bool
	for len(heads) > 0 {
		n := min(len(heads), len(orders))
		hs, os := heads[:n], out[:n]
		m.mu.Lock()
		for i, pfn := range hs {
			os[i] = ReleaseFreed
			if pfn < m.npages {
				if _, hp, ok := m.folioHead(pfn); ok && hp.ref > 1 {
					os[i] = ReleaseHeld
					continue
				}
			}
			orders[i], isHead[i] = m.headOrder(pfn)
		}
		g := m.guard
		m.mu.Unlock()
		var vetoed [64]error
		if g != nil {
			for i, pfn := range hs {
				if os[i] != ReleaseHeld && isHead[i] {
					vetoed[i] = g.CheckFree(pfn, orders[i])
				}
			}
		}
		m.mu.Lock()
		for i, pfn := range hs {
			if os[i] == ReleaseHeld {
				continue
			}
			err := m.freeLocked(t, pfn, src, vetoed[i])
			if err == nil {
				continue
			}
			if e, ok := err.(*Error); ok && e.Err == ErrTDXOwned {
				os[i] = ReleaseVetoed
				continue
			}
			m.mu.Unlock()
			os[i] = ReleaseSkipped
			for j := range out[i+1:] {
				out[i+1+j] = ReleaseSkipped
			}
			return err
		}
		m.mu.Unlock()
		heads, out = heads[n:], out[n:]
	}
	return nil
}
