// Package rangemap maps ranges of uint64 keys (page indexes, GFNs) to uint64
// values, with zero for every key never set. It stores one record per run of
// equal values, not one per key: memory attributes of a 1 TiB guest are a
// handful of runs, not 268 million entries. Kernel counterparts: the
// mem_attr_array xarray (stored as ranges) and guest_memfd's attribute maple
// tree, which also merges adjacent equal ranges.
package rangemap

import "sort"

type run struct {
	start, end uint64 // [start, end)
	val        uint64 // never zero: zero is the absence of a run
}

// Map is a range map. The zero value is empty (every key maps to 0).
type Map struct {
	runs []run // sorted, disjoint, adjacent runs have different values
}

// first returns the index of the first run ending after k.
func (m *Map) first(k uint64) int {
	return sort.Search(len(m.runs), func(i int) bool { return m.runs[i].end > k })
}

// Get returns the value at k.
func (m *Map) Get(k uint64) uint64 {
	i := m.first(k)
	if i < len(m.runs) && m.runs[i].start <= k {
		return m.runs[i].val
	}
	return 0
}

// Set gives every key in [start, end) the value val.
func (m *Map) Set(start, end, val uint64) {
	if start >= end {
		return
	}
	i := m.first(start)
	j := i
	var keep []run
	for j < len(m.runs) && m.runs[j].start < end {
		r := m.runs[j]
		if r.start < start {
			keep = append(keep, run{r.start, start, r.val})
		}
		if r.end > end {
			keep = append(keep, run{end, r.end, r.val})
		}
		j++
	}
	repl := make([]run, 0, len(keep)+1)
	for _, r := range keep {
		if r.end <= start {
			repl = append(repl, r)
		}
	}
	if val != 0 {
		repl = append(repl, run{start, end, val})
	}
	for _, r := range keep {
		if r.start >= end {
			repl = append(repl, r)
		}
	}
	m.runs = append(m.runs[:i], append(repl, m.runs[j:]...)...)
	m.merge(i - 1)
}

// merge joins equal adjacent runs from index i (clamped) onward, up to a
// few runs past the edit.
func (m *Map) merge(i int) {
	if i < 0 {
		i = 0
	}
	for n := 0; i+1 < len(m.runs) && n < 4; n++ {
		a, b := m.runs[i], m.runs[i+1]
		if a.end == b.start && a.val == b.val {
			m.runs[i].end = b.end
			m.runs = append(m.runs[:i+1], m.runs[i+2:]...)
			continue
		}
		i++
	}
}

// Uniform reports whether every key in [start, end) has the same value, and
// that value. An empty range is uniform with value 0.
func (m *Map) Uniform(start, end uint64) (uint64, bool) {
	if start >= end {
		return 0, true
	}
	i := m.first(start)
	if i == len(m.runs) || m.runs[i].start >= end {
		return 0, true // all in a gap
	}
	r := m.runs[i]
	if r.start <= start && r.end >= end {
		return r.val, true
	}
	return 0, false
}

// All reports whether every key in [start, end) has value val.
func (m *Map) All(start, end, val uint64) bool {
	v, ok := m.Uniform(start, end)
	return ok && v == val
}

// Each calls fn for each maximal piece of [start, end) with one value,
// gaps included (value 0), in key order.
func (m *Map) Each(start, end uint64, fn func(s, e, val uint64)) {
	k := start
	for i := m.first(start); i < len(m.runs) && k < end; i++ {
		r := m.runs[i]
		if r.start >= end {
			break
		}
		if r.start > k {
			fn(k, r.start, 0)
			k = r.start
		}
		e := min(r.end, end)
		fn(k, e, r.val)
		k = e
	}
	if k < end {
		fn(k, end, 0)
	}
}

// Runs returns the number of stored runs (for state-size figures).
func (m *Map) Runs() int { return len(m.runs) }
