package report

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Diff is one compared figure of two runs.
type Diff struct {
	Metric string  `json:"metric"`
	A      float64 `json:"a"`
	B      float64 `json:"b"`
	// Change is (B-A)/A; 0 when A is 0 (in JSON it is null when A is 0
	// and B is not: no ratio is right for 0 -> N; Delta and Kind are).
	Change float64 `json:"change"`
	Differ bool    `json:"differ"`
	// Delta is B-A.
	Delta float64 `json:"delta"`
	// Kind is "same", "new" (0 -> N), "gone" (N -> 0), "up" or "down".
	Kind string `json:"kind"`
}

// MarshalJSON writes change as null when A is 0 and B is not.
func (d Diff) MarshalJSON() ([]byte, error) {
	type plain Diff
	if d.A == 0 && d.B != 0 {
		return json.Marshal(struct {
			plain
			Change *float64 `json:"change"`
		}{plain: plain(d)})
	}
	return json.Marshal(plain(d))
}

// kind names how y differs from x.
func kind(x, y float64) string {
	switch {
	case x == y:
		return "same"
	case x == 0:
		return "new"
	case y == 0:
		return "gone"
	case y > x:
		return "up"
	}
	return "down"
}

// Comparison is two runs of the same workload side by side.
type Comparison struct {
	NameA string `json:"a"`
	NameB string `json:"b"`
	Seed  uint64 `json:"seed"`
	Diffs []Diff `json:"diffs"`
	// ViolationsA and ViolationsB are the invariants each run broke.
	ViolationsA map[string]int `json:"violations_a"`
	ViolationsB map[string]int `json:"violations_b"`
}

// Compare lines up the figures a design choice moves: SEAMCALLs (total and
// by leaf), modeled time (total and by phase kind), memory overhead,
// mappings, splits, conversions, faults, and the checks.
func Compare(nameA string, a *Run, nameB string, b *Run) *Comparison {
	c := &Comparison{NameA: nameA, NameB: nameB, Seed: a.Seed,
		ViolationsA: a.Checks.Failed, ViolationsB: b.Checks.Failed}
	add := func(metric string, x, y float64) {
		d := Diff{Metric: metric, A: x, B: y, Differ: x != y, Delta: y - x, Kind: kind(x, y)}
		if x != 0 {
			d.Change = (y - x) / x
		}
		c.Diffs = append(c.Diffs, d)
	}
	total := func(m map[string]uint64) (n uint64) {
		for _, v := range m {
			n += v
		}
		return n
	}
	add("seamcalls total", float64(total(a.Seamcalls)), float64(total(b.Seamcalls)))
	for _, leaf := range unionKeys(a.Seamcalls, b.Seamcalls) {
		add("seamcalls "+leaf, float64(a.Seamcalls[leaf]), float64(b.Seamcalls[leaf]))
	}
	for _, k := range unionKeys(a.ModeledNS, b.ModeledNS) {
		add("modeled_ms "+k, float64(a.ModeledNS[k])/1e6, float64(b.ModeledNS[k])/1e6)
	}
	add("memory pamt_bytes", float64(a.Memory.PAMTBytes), float64(b.Memory.PAMTBytes))
	add("memory pamt_dynamic_bytes_peak", float64(a.Memory.PAMTDynamicBytes), float64(b.Memory.PAMTDynamicBytes))
	add("memory sept_pages", float64(a.Memory.SEPTPages), float64(b.Memory.SEPTPages))
	add("memory kvm_page_tables_peak", float64(a.Memory.PageTables), float64(b.Memory.PageTables))
	var ca, cb uint64
	for _, v := range a.Memory.ChargedBytes {
		ca += v
	}
	for _, v := range b.Memory.ChargedBytes {
		cb += v
	}
	add("memory charged_bytes", float64(ca), float64(cb))
	for _, l := range LevelNames {
		add("mappings_peak "+l, float64(a.MappingsPeak[l]), float64(b.MappingsPeak[l]))
	}
	add("splits 2M", float64(a.Splits["2M"]), float64(b.Splits["2M"]))
	add("splits 1G", float64(a.Splits["1G"]), float64(b.Splits["1G"]))
	add("conversions to_shared", float64(a.Conversions.ToShared), float64(b.Conversions.ToShared))
	add("faults ept_violations", float64(a.Faults.EPTViolations), float64(b.Faults.EPTViolations))
	add("checks failed", float64(a.Checks.Run-a.Checks.Passed), float64(b.Checks.Run-b.Checks.Passed))
	return c
}

func unionKeys[V any](a, b map[string]V) []string {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return slices.Sorted(maps.Keys(m))
}

// WriteText prints the comparison side by side; rows that differ are
// marked with '*' and their change.
func (c *Comparison) WriteText(w io.Writer) {
	fmt.Fprintf(w, "compare (seed %d)\n  A: %s\n  B: %s\n\n", c.Seed, c.NameA, c.NameB)
	fmt.Fprintf(w, "  %-42s %16s %16s  %s\n", "", "A", "B", "change")
	for _, d := range c.Diffs {
		mark, change := " ", ""
		if d.Differ {
			mark = "*"
			switch {
			case d.A == 0:
				change = "new"
			default:
				change = fmt.Sprintf("%+.1f%%", 100*d.Change)
			}
		}
		fmt.Fprintf(w, "%s %-42s %16s %16s  %s\n", mark, d.Metric, num(d.A), num(d.B), change)
	}
	fmt.Fprintln(w)
	for _, side := range []struct {
		name string
		v    map[string]int
	}{{"A", c.ViolationsA}, {"B", c.ViolationsB}} {
		if len(side.v) == 0 {
			fmt.Fprintf(w, "%s: all checks passed\n", side.name)
			continue
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(side.v)) {
			parts = append(parts, fmt.Sprintf("%s (%d)", k, side.v[k]))
		}
		fmt.Fprintf(w, "%s: violations: %s\n", side.name, strings.Join(parts, ", "))
	}
}

func num(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.3f", v)
}
