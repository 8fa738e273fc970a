package bench

import (
	"testing"

	"github.com/tdxsim/tdxsim/addr"
)

// benchFaults runs Faults over about b.N pages of the given size and
// reports the fault path's own figures beside Go's per-iteration ones
// (which include building and tearing down the TD).
func benchFaults(b *testing.B, huge bool) {
	unit := uint64(addr.PageSize)
	if huge {
		unit = addr.Size2M
	}
	mem := (uint64(b.N)*unit + addr.Size2M - 1) &^ (addr.Size2M - 1)
	b.ReportAllocs()
	r, err := Faults(Options{MemBytes: mem, Huge: huge, Parallel: true})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(r.ElapsedNS)/float64(r.Ops), "ns/fault")
	b.ReportMetric(r.BytesPerPage, "B/page")
	b.ReportMetric(r.AllocsPerOp, "allocs/fault")
}

// BenchmarkFault4K: private 4K fault + AUG + accept.
func BenchmarkFault4K(b *testing.B) { benchFaults(b, false) }

// BenchmarkFault2M: private 2M fault + AUG + accept.
func BenchmarkFault2M(b *testing.B) { benchFaults(b, true) }

// BenchmarkConvert4KIn2M: a 4K page converted to shared inside a 2M
// mapping (split + remove).
func BenchmarkConvert4KIn2M(b *testing.B) {
	r, err := Convert4KIn2M(max(b.N, 1))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(r.ElapsedNS)/float64(r.Ops), "ns/convert")
}

// BenchmarkBuild64M: a TD built with a 64 MiB measured image.
func BenchmarkBuild64M(b *testing.B) {
	for range b.N {
		if _, err := Build(64 << 20); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTeardownPerGiB: teardown of a TD of 1 GiB accepted at 4K.
func BenchmarkTeardownPerGiB(b *testing.B) {
	var ns int64
	for range b.N {
		r, err := Teardown(1, false)
		if err != nil {
			b.Fatal(err)
		}
		ns += r.ElapsedNS
	}
	b.ReportMetric(float64(ns)/float64(b.N), "ns/GiB")
}

// BenchmarkSchedSwitch: the deterministic scheduler's thread switch.
func BenchmarkSchedSwitch(b *testing.B) {
	r, err := SchedSwitch(max(b.N, 1))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(r.ElapsedNS)/float64(r.Ops), "ns/switch")
}
