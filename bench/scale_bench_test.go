package bench

import (
	"testing"
	"time"
)

// benchScale runs Scale once per iteration over gib GiB and reports the
// whole run's wall time per GiB beside the faults' own, so a profile of
// it shows where a scale run spends what is not faults (host, build,
// teardown).
func benchScale(b *testing.B, gib uint64, huge bool) {
	var wall, faults time.Duration
	for range b.N {
		start := time.Now()
		r, err := Scale(gib<<30, huge)
		if err != nil {
			b.Fatal(err)
		}
		wall += time.Since(start)
		faults += time.Duration(r.ElapsedNS)
	}
	b.ReportMetric(float64(wall.Nanoseconds())/float64(b.N)/float64(gib), "wall-ns/GiB")
	b.ReportMetric(float64(faults.Nanoseconds())/float64(b.N)/float64(gib), "fault-ns/GiB")
}

// BenchmarkScale16GiBAt2M: the scale run's code path for a 16 GiB TD at 2M.
func BenchmarkScale16GiBAt2M(b *testing.B) { benchScale(b, 16, true) }

// BenchmarkScale2GiBAt4K: the scale run's code path for a 2 GiB TD at 4K.
func BenchmarkScale2GiBAt4K(b *testing.B) { benchScale(b, 2, false) }
