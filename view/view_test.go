package view_test

import (
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/scenario"
	"github.com/tdxsim/tdxsim/view"
)

// The default scenario's map after boot shows private memory mapped at
// 2M and the cells' states add up; a cell's pages and a GPA's S-EPT walk
// agree with the map.
func TestDefaultScenarioMaps(t *testing.T) {
	f, err := scenario.Default()
	if err != nil {
		t.Fatal(err)
	}
	var maps [][]view.Map
	var pages []view.Page
	var walk []view.SEPTStep
	r, err := scenario.Start(f, scenario.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		sv := r.View()
		m := view.Snapshot(sv.World)
		maps = append(maps, m)
		if len(m) == 1 && strings.Contains(sv.At, "timeline[0]") {
			i := strings.IndexByte(m[0].Cells, byte(view.Private2M))
			if i < 0 {
				t.Fatalf("no 2M cell after boot: %v", m[0].Counts)
			}
			pages = view.CellPages(sv.World.Host.Mod, sv.World.TDs[0], uint64(i)<<21)
			walk = view.SEPTPath(sv.World.Host.Mod, sv.World.TDs[0], uint64(i)<<21)
		}
		if !r.More() {
			break
		}
		r.Next()
	}
	if _, err := r.Report(); err != nil {
		t.Fatal(err)
	}
	if len(maps) < 2 {
		t.Fatalf("%d step views", len(maps))
	}
	m := maps[1][0]
	if uint64(len(m.Cells)) != m.Bytes>>21 {
		t.Errorf("%d cells for %d bytes", len(m.Cells), m.Bytes)
	}
	n := 0
	for _, c := range m.Counts {
		n += c
	}
	if n != len(m.Cells) {
		t.Errorf("counts %v add to %d, want %d", m.Counts, n, len(m.Cells))
	}
	if len(pages) != 512 || pages[0].State != string(view.Private2M) || pages[511].SEPT != "MAPPED" || pages[1].HPA != pages[0].HPA+4096 {
		t.Errorf("pages of a 2M cell: %+v ... %+v", pages[0], pages[511])
	}
	if len(walk) != 3 || !walk[2].Leaf || walk[2].Level != "2M" || walk[2].State != "MAPPED" || walk[0].State != "NL_MAPPED" {
		t.Errorf("S-EPT walk %+v", walk)
	}
}
