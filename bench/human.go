package bench

import "fmt"

// slowBelow is the rate under which a figure reads better as time per
// operation: "1.18 s/op" says what "build_64m 1" (ops/s) did not.
const slowBelow = 10

// rateUnit is how a rate is printed: as rate/scale, or (perOp) as
// scale/rate, with prec decimals and the suffix.
type rateUnit struct {
	perOp  bool
	scale  float64
	prec   int
	suffix string
}

// unitFor picks the unit a rate reads best in.
func unitFor(opsPerSec float64) rateUnit {
	switch {
	case opsPerSec < 1:
		return rateUnit{true, 1, 2, "s/op"}
	case opsPerSec < slowBelow:
		return rateUnit{true, 1e3, 0, "ms/op"}
	case opsPerSec >= 1e9:
		return rateUnit{false, 1e9, 2, "G/s"}
	case opsPerSec >= 1e6:
		return rateUnit{false, 1e6, 2, "M/s"}
	case opsPerSec >= 1e3:
		return rateUnit{false, 1e3, 1, "k/s"}
	}
	return rateUnit{false, 1, 0, "/s"}
}

func (u rateUnit) number(opsPerSec float64) float64 {
	if u.perOp {
		return u.scale / opsPerSec
	}
	return opsPerSec / u.scale
}

func (u rateUnit) format(x float64) string { return fmt.Sprintf("%.*f", u.prec, x) }

// HumanRate prints a rate in operations per second with a k, M or G
// suffix, or, for slow figures (under 10/s), the time one operation takes.
func HumanRate(opsPerSec float64) string {
	if opsPerSec <= 0 {
		return "-"
	}
	u := unitFor(opsPerSec)
	return u.format(u.number(opsPerSec)) + " " + u.suffix
}

// HumanSpread prints the rates lo and hi in the unit the median reads
// best in, smaller printed number first: "231.4..364.9 k/s", and for a
// slow figure, whose fastest round takes the least time, "1.15..1.62 s/op".
func HumanSpread(median, lo, hi float64) string {
	if median <= 0 || lo <= 0 || hi <= 0 {
		return "-"
	}
	u := unitFor(median)
	a, b := u.number(lo), u.number(hi)
	if a > b {
		a, b = b, a
	}
	return u.format(a) + ".." + u.format(b) + " " + u.suffix
}
