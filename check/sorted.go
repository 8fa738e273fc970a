package check

import (
	"iter"
	"maps"
	"slices"

	"github.com/tdxsim/tdxsim/addr"
)

// sortedRanges yields m in key order, so reports do not depend on map order.
func sortedRanges(m map[addr.PFN]int32) iter.Seq2[addr.PFN, int32] {
	return func(yield func(addr.PFN, int32) bool) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if !yield(k, m[k]) {
				return
			}
		}
	}
}
