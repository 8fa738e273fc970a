//go:build !linux

package bench

import "runtime"

func resetPeakRSS() {}

// peakRSS is, off Linux, the memory the Go runtime got from the system.
func peakRSS() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Sys
}
