package bench

import "testing"

func TestSmall(t *testing.T) {
	var rs []Result
	for _, huge := range []bool{false, true} {
		r, err := Faults(Options{MemBytes: 64 << 20, Huge: huge, Parallel: true})
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	for _, r := range rs {
		t.Logf("%-18s %12.0f/s %8.1f B/page %.2f allocs/op %s", r.Name, r.OpsPerSec, r.BytesPerPage, r.AllocsPerOp, r.Note)
	}
}
