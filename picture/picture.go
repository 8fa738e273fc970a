// Package picture draws a run as a standalone SVG (tdxsim run --svg), for
// a mailing-list post or a design doc: each TD's GPA space as a grid of
// 2 MiB cells coloured by state with a legend, SEAMCALLs by leaf (count
// and modeled time), and the memory overhead the run paid.
package picture

import (
	"fmt"
	"io"
	"maps"
	"slices"

	svg "github.com/ajstarks/svgo"

	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/view"
)

// Colours for each cell state; the web UI (tdxsim serve) uses the same.
var Colours = map[view.State]string{
	view.Unmapped:  "#e8e8e8",
	view.Pending:   "#f6c85f",
	view.Private4K: "#6f9fd8",
	view.Private2M: "#2e5aa8",
	view.Private1G: "#14285a",
	view.Blocked:   "#d1495b",
	view.Shared:    "#66a182",
	view.Mixed:     "#9b5de5",
}

// MaxCells bounds the cells drawn per TD: a larger GPA space is drawn with
// each square standing for several 2 MiB cells (its most mapped state).
const MaxCells = 8192

const (
	width   = 960
	margin  = 20
	perRow  = 128
	cellPx  = 7
	barH    = 14
	lineH   = 18
	fontCSS = "font-family:sans-serif;font-size:12px"
)

// Downsample merges groups of k cells into one, keeping the state that
// says the most (anything mapped over unmapped; blocked, then mixed, above
// the rest).
func Downsample(cells string, k int) string {
	if k <= 1 {
		return cells
	}
	rank := map[byte]int{'.': 0, 's': 1, 'p': 2, '4': 3, '2': 4, 'g': 5, 'm': 6, 'b': 7}
	out := make([]byte, 0, (len(cells)+k-1)/k)
	for i := 0; i < len(cells); i += k {
		best := cells[i]
		for _, c := range []byte(cells[i:min(i+k, len(cells))]) {
			if rank[c] > rank[best] {
				best = c
			}
		}
		out = append(out, best)
	}
	return string(out)
}

// Write draws r and the maps (the TDs' state at the last step before
// teardown) as one SVG document.
func Write(w io.Writer, r *report.Run, tdMaps []view.Map) error {
	type mapLayout struct {
		m     view.Map
		cells string
		per   int // 2 MiB cells per square
		rows  int
	}
	var layouts []mapLayout
	height := margin + 3*lineH
	for _, m := range tdMaps {
		per := max(1, (len(m.Cells)+MaxCells-1)/MaxCells)
		cells := Downsample(m.Cells, per)
		rows := (len(cells) + perRow - 1) / perRow
		layouts = append(layouts, mapLayout{m, cells, per, rows})
		height += lineH + rows*cellPx + lineH
	}
	height += lineH * 2 // legend
	leaves := slices.Sorted(maps.Keys(r.Seamcalls))
	height += lineH + len(leaves)*(barH+4) + lineH
	memRows := memoryRows(r)
	height += lineH + len(memRows)*(barH+4) + margin

	canvas := svg.New(w)
	canvas.Start(width, height)
	canvas.Rect(0, 0, width, height, "fill:white")
	y := margin + lineH
	title := fmt.Sprintf("tdxsim: %s (seed %d)", r.Scenario, r.Seed)
	canvas.Text(margin, y, title, "font-family:sans-serif;font-size:16px;font-weight:bold")
	y += lineH
	checks := fmt.Sprintf("checks: %d run, %d failed; violations: %d", r.Checks.Run, r.Checks.Run-r.Checks.Passed, len(r.Violations))
	canvas.Text(margin, y, checks, fontCSS)
	y += lineH / 2
	for _, l := range layouts {
		y += lineH
		unit := "2 MiB"
		if l.per > 1 {
			unit = fmt.Sprintf("%d MiB", 2*l.per)
		}
		canvas.Text(margin, y, fmt.Sprintf("%s: GPA 0 to %s, one square per %s", l.m.TD, report.HumanBytes(l.m.Bytes), unit), fontCSS)
		y += 4
		for i := 0; i < len(l.cells); i++ {
			x := margin + (i%perRow)*cellPx
			cy := y + (i/perRow)*cellPx
			canvas.Rect(x, cy, cellPx-1, cellPx-1, "fill:"+Colours[view.State(l.cells[i])])
		}
		y += l.rows*cellPx + lineH
	}
	y += 4
	x := margin
	for _, l := range view.Legend {
		canvas.Rect(x, y-10, 10, 10, "fill:"+Colours[l.State])
		canvas.Text(x+14, y, l.Name, fontCSS)
		x += 14 + 7*len(l.Name) + 16
	}
	y += 2 * lineH
	canvas.Text(margin, y, "SEAMCALLs by leaf (count; modeled time)", "font-family:sans-serif;font-size:13px;font-weight:bold")
	y += 6
	var maxN uint64 = 1
	for _, k := range leaves {
		maxN = max(maxN, r.Seamcalls[k])
	}
	const labelW, barMax = 230, 500
	for _, k := range leaves {
		n := r.Seamcalls[k]
		bw := max(1, int(float64(barMax)*float64(n)/float64(maxN)))
		canvas.Text(margin, y+barH-3, k, fontCSS)
		canvas.Rect(margin+labelW, y, bw, barH, "fill:#2e5aa8")
		canvas.Text(margin+labelW+bw+6, y+barH-3, fmt.Sprintf("%d; %s", n, report.Duration(r.SeamcallNS[k])), fontCSS)
		y += barH + 4
	}
	y += lineH
	canvas.Text(margin, y, "Memory overhead (at peak)", "font-family:sans-serif;font-size:13px;font-weight:bold")
	y += 6
	var maxB uint64 = 1
	for _, m := range memRows {
		maxB = max(maxB, m.bytes)
	}
	for _, m := range memRows {
		bw := max(1, int(float64(barMax)*float64(m.bytes)/float64(maxB)))
		canvas.Text(margin, y+barH-3, m.name, fontCSS)
		canvas.Rect(margin+labelW, y, bw, barH, "fill:#66a182")
		canvas.Text(margin+labelW+bw+6, y+barH-3, report.HumanBytes(m.bytes), fontCSS)
		y += barH + 4
	}
	canvas.End()
	return nil
}

type memRow struct {
	name  string
	bytes uint64
}

func memoryRows(r *report.Run) []memRow {
	rows := []memRow{
		{"PAMT static", r.Memory.PAMTStaticBytes},
		{"PAMT dynamic", r.Memory.PAMTDynamicBytes},
		{"S-EPT pages", uint64(r.Memory.SEPTPages) * 4096},
		{"KVM page tables", uint64(r.Memory.PageTables) * 4096},
	}
	for _, td := range slices.Sorted(maps.Keys(r.Memory.ChargedBytes)) {
		rows = append(rows, memRow{"charged to " + td, r.Memory.ChargedBytes[td]})
	}
	return rows
}
