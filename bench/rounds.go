package bench

import (
	"slices"
)

// summarize folds the rounds of one figure into one Result: the rate
// (OpsPerSec, Median) is the median of the rounds' rates, Min and Max
// their extremes (the spread `tdxsim bench` reports), PerRound every
// round's rate in the order measured. The other fields (ops, elapsed,
// bytes and allocations per page, note) are those of the median round
// (the lower of the two middle rounds when there is an even number), so
// they describe one real measurement rather than a blend of several.
func summarize(rounds []Result) Result {
	if len(rounds) == 0 {
		return Result{}
	}
	rates := make([]float64, len(rounds))
	for i, r := range rounds {
		rates[i] = r.OpsPerSec
	}
	order := make([]int, len(rounds))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case rates[a] < rates[b]:
			return -1
		case rates[a] > rates[b]:
			return 1
		}
		return 0
	})
	out := rounds[order[(len(order)-1)/2]]
	med := median(rates)
	lo, hi := rates[order[0]], rates[order[len(order)-1]]
	out.OpsPerSec = med
	out.Median, out.Min, out.Max = &med, &lo, &hi
	out.Rounds = len(rounds)
	out.PerRound = rates
	return out
}

// median is the middle of xs, or the mean of the two middle values when
// there is an even number of them.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// ratio is a/b's medians as a pointer for the JSON, or nil when either is
// missing or b is not a positive rate: an absent ratio, never a 0.
func ratio(a, b Result) *float64 {
	if a.Median == nil || b.Median == nil || *b.Median <= 0 {
		return nil
	}
	x := *a.Median / *b.Median
	return &x
}
