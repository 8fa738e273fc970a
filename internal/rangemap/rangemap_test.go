package rangemap

import (
	"testing"

	"pgregory.net/rapid"
)

// TestRangemapMatchesArray checks the range map against a plain array on
// random Set sequences.
func TestRangemapMatchesArray(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		const n = 64
		var ref [n]uint64
		var m Map
		ops := rapid.IntRange(1, 40).Draw(t, "ops")
		for o := 0; o < ops; o++ {
			s := rapid.Uint64Range(0, n).Draw(t, "s")
			e := rapid.Uint64Range(0, n).Draw(t, "e")
			v := rapid.Uint64Range(0, 3).Draw(t, "v")
			m.Set(s, e, v)
			for k := s; k < e; k++ {
				ref[k] = v
			}
			for k := uint64(0); k < n; k++ {
				if m.Get(k) != ref[k] {
					t.Fatalf("key %d: got %d want %d", k, m.Get(k), ref[k])
				}
			}
			for i := 1; i < len(m.runs); i++ {
				a, b := m.runs[i-1], m.runs[i]
				if a.end > b.start || (a.end == b.start && a.val == b.val) {
					t.Fatalf("runs not canonical: %+v", m.runs)
				}
			}
			qs := rapid.Uint64Range(0, n).Draw(t, "qs")
			qe := rapid.Uint64Range(qs, n).Draw(t, "qe")
			val, uni := m.Uniform(qs, qe)
			wantUni := true
			for k := qs; k < qe; k++ {
				if ref[k] != ref[qs] {
					wantUni = false
				}
			}
			if uni != wantUni || (uni && qe > qs && val != ref[qs]) {
				t.Fatalf("Uniform(%d,%d) = %d,%v", qs, qe, val, uni)
			}
			k := qs
			m.Each(qs, qe, func(s, e, v uint64) {
				if s != k || e <= s {
					t.Fatalf("Each piece [%d,%d) after %d", s, e, k)
				}
				for x := s; x < e; x++ {
					if ref[x] != v {
						t.Fatalf("Each value at %d", x)
					}
				}
				k = e
			})
			if k != qe && qe > qs {
				t.Fatalf("Each stopped at %d, want %d", k, qe)
			}
		}
	})
}
