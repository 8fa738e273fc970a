package hostmem

import (
	"errors"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
)

// ReleaseFolios over 70 pages (two lock batches): a referenced folio is
// held, a TDX-owned one vetoed (and recorded), a free of a page not
// allocated stops the batch there, the rest are freed.
func TestReleaseFoliosOutcomes(t *testing.T) {
	m, c := newMem(t, Config{Bytes: 64 << 20})
	heads := make([]addr.PFN, 70)
	for i := range heads {
		p, err := m.Alloc(nil, Request{Order: 0, Source: SourceBuddy})
		if err != nil {
			t.Fatal(err)
		}
		heads[i] = p
	}
	if err := m.Get(heads[3]); err != nil {
		t.Fatal(err)
	}
	m.SetGuard(vetoAll{heads[5]})
	if err := m.Free(nil, heads[66], SourceBuddy); err != nil {
		t.Fatal(err)
	}
	free0 := m.FreePages()
	out := make([]Released, len(heads))
	err := m.ReleaseFolios(nil, heads, SourceBuddy, out)
	if !errors.Is(err, ErrDoubleFree) {
		t.Fatalf("error %v, want a double free at the 67th page", err)
	}
	for i, r := range out {
		want := ReleaseFreed
		switch {
		case i == 3:
			want = ReleaseHeld
		case i == 5:
			want = ReleaseVetoed
		case i >= 66:
			want = ReleaseSkipped
		}
		if r != want {
			t.Fatalf("page %d: %d, want %d", i, r, want)
		}
	}
	if got := m.FreePages() - free0; got != 64 {
		t.Fatalf("%d pages freed, want 64", got)
	}
	if !m.IsAllocated(heads[3]) || !m.IsAllocated(heads[5]) || !m.IsAllocated(heads[67]) {
		t.Fatal("a held, vetoed or skipped folio was freed")
	}
	if v := len(c.Violations()); v != 2 {
		t.Fatalf("%d violations, want the veto and the double free", v)
	}
}
