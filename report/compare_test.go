package report

import (
	"encoding/json"
	"strings"
	"testing"
)

// A figure that went from 0 to N has no ratio: its JSON change is null,
// its delta N and its kind "new"; the others keep their ratio.
func TestCompareChangeFromZero(t *testing.T) {
	a := &Run{Seamcalls: map[string]uint64{"TDH.MEM.PAGE.AUG": 10}, Splits: map[string]int64{}}
	b := &Run{Seamcalls: map[string]uint64{"TDH.MEM.PAGE.AUG": 5, "TDH.MEM.PAGE.DEMOTE": 3}, Splits: map[string]int64{"2M": 2}}
	c := Compare("a", a, "b", b)
	buf, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Diffs []struct {
			Metric string   `json:"metric"`
			A      float64  `json:"a"`
			B      float64  `json:"b"`
			Change *float64 `json:"change"`
			Delta  float64  `json:"delta"`
			Kind   string   `json:"kind"`
		} `json:"diffs"`
	}
	if err := json.Unmarshal(buf, &got); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range got.Diffs {
		switch d.Metric {
		case "seamcalls TDH.MEM.PAGE.DEMOTE", "splits 2M":
			seen[d.Metric] = true
			if d.Change != nil || d.Kind != "new" || d.Delta <= 0 {
				t.Errorf("%s: change %v, kind %q, delta %v; want null, new, > 0", d.Metric, d.Change, d.Kind, d.Delta)
			}
		case "seamcalls TDH.MEM.PAGE.AUG":
			seen[d.Metric] = true
			if d.Change == nil || *d.Change != -0.5 || d.Kind != "down" || d.Delta != -5 {
				t.Errorf("%s: %+v", d.Metric, d)
			}
		case "splits 1G":
			seen[d.Metric] = true
			if d.Change == nil || *d.Change != 0 || d.Kind != "same" {
				t.Errorf("%s: %+v", d.Metric, d)
			}
		}
	}
	if len(seen) != 4 {
		t.Fatalf("metrics seen %v in %s", seen, buf)
	}
	var text strings.Builder
	c.WriteText(&text)
	if !strings.Contains(text.String(), "new") {
		t.Errorf("text: %s", text.String())
	}
}
