package gmem

import (
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/hostmem"
)

// A bitmap behaves as 512 bits whatever it holds inside, and holds no
// array while all clear or all set.
func TestBitmapCompact(t *testing.T) {
	var b bitmap
	var want [512]bool
	check := func(what string) {
		t.Helper()
		n := 0
		for i := range want {
			if b.get(uint64(i)) != want[i] {
				t.Fatalf("%s: bit %d is %v", what, i, !want[i])
			}
			if want[i] {
				n++
			}
		}
		if b.empty() != (n == 0) {
			t.Fatalf("%s: empty() = %v with %d bits set", what, b.empty(), n)
		}
		if (n == 0 || n == 512) && b.w != nil && b.w != &fullWords {
			t.Fatalf("%s: %d bits set keep an array", what, n)
		}
	}
	check("zero")
	for i := range 512 {
		b.set(uint64(i))
		want[i] = true
	}
	check("all set")
	if b.w != &fullWords {
		t.Fatal("all set is not the shared full bitmap")
	}
	b.clear(7)
	want[7] = false
	check("one clear")
	if fullWords[0] != ^uint64(0) {
		t.Fatal("clearing a full bitmap wrote the shared words")
	}
	b = full
	c := full
	c.clear(3)
	if !b.get(3) {
		t.Fatal("clearing a copy of full changed another full bitmap")
	}
	for i := range 512 {
		b.clear(uint64(i))
		want[i] = false
	}
	want[7] = false
	check("all clear")
	b.clear(9) // clearing an empty bitmap stays empty
	check("clear of empty")
}

// A PFN array gives back every PFN hostmem can hand out, up to 64 TiB of
// host memory, and keeps the bits above 32 only once a PFN needs them.
func TestPFNArray(t *testing.T) {
	var a pfnArray
	if a.held() {
		t.Fatal("empty array held")
	}
	a.set(0, 5)
	a.set(511, 1<<32-1)
	if a.hi != nil {
		t.Fatal("PFNs below 2^32 made the high array")
	}
	max := addr.PFN(hostmem.MaxBytes/addr.PageSize - 1)
	a.set(3, max)
	a.set(4, 1<<32)
	for off, want := range map[uint64]addr.PFN{0: 5, 511: 1<<32 - 1, 3: max, 4: 1 << 32} {
		if got := a.get(off); got != want {
			t.Fatalf("index %d: PFN %#x, want %#x", off, got, want)
		}
	}
	a.set(3, 9) // a low PFN over a high one clears the high bits
	if got := a.get(3); got != 9 {
		t.Fatalf("index 3 rewritten: PFN %#x, want 9", got)
	}
}
