package gmem

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/hostmem"
)

// bitmap is one bit per index of a 2 MiB chunk. All clear (nil) and all
// set (the shared fullWords, never written) cost no array: a chunk of one
// huge folio, present and up to date, holds two pointers instead of 128
// bytes. A partial bitmap has its own 64-byte array; one that becomes all
// clear or all set again drops it.
type bitmap struct{ w *[8]uint64 }

var fullWords = [8]uint64{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}

// full is a bitmap with every bit set.
var full = bitmap{&fullWords}

func (b *bitmap) get(i uint64) bool { return b.w != nil && b.w[i>>6]&(1<<(i&63)) != 0 }

func (b *bitmap) set(i uint64) {
	switch {
	case b.w == &fullWords:
		return
	case b.w == nil:
		b.w = new([8]uint64)
	}
	w := &b.w[i>>6]
	*w |= 1 << (i & 63)
	// Compare the whole array only when this word filled up: a 4K fault
	// sets one bit, and the 64-byte compare was most of the cost.
	if *w == ^uint64(0) && *b.w == fullWords {
		b.w = &fullWords
	}
}

func (b *bitmap) clear(i uint64) {
	switch {
	case b.w == nil:
		return
	case b.w == &fullWords:
		w := fullWords
		b.w = &w
	}
	w := &b.w[i>>6]
	*w &^= 1 << (i & 63)
	if *w == 0 && *b.w == ([8]uint64{}) { // as in set: only when a word emptied
		b.w = nil
	}
}

func (b *bitmap) empty() bool { return b.w == nil }

// pfnArray is the PFN of each index of a chunk of 4 KiB folios: the low 32
// bits in a 2 KiB array, and the bits above (a host over 16 TiB) in a
// 512-byte array made only once a PFN needs them. hostmem models at most
// 64 TiB (2^34 pages), so 40 bits suffice.
type pfnArray struct {
	lo *[512]uint32
	hi *[512]uint8
}

// The largest host PFN fits in 40 bits (this fails to compile otherwise).
var _ = [1]struct{}{}[(hostmem.MaxBytes/addr.PageSize-1)>>40]

func (a *pfnArray) set(off uint64, pfn addr.PFN) {
	if a.lo == nil {
		a.lo = new([512]uint32)
	}
	a.lo[off] = uint32(pfn)
	if h := uint8(pfn >> 32); h != 0 || a.hi != nil {
		if a.hi == nil {
			a.hi = new([512]uint8)
		}
		a.hi[off] = h
	}
}

func (a *pfnArray) get(off uint64) addr.PFN {
	p := addr.PFN(a.lo[off])
	if a.hi != nil {
		p |= addr.PFN(a.hi[off]) << 32
	}
	return p
}

func (a *pfnArray) held() bool { return a.lo != nil }
