package fuzz

import (
	"fmt"

	"github.com/tdxsim/tdxsim/scenario"
)

// Strategies are the scheduler strategies a campaign can use (--strategy).
var Strategies = []string{"random", "pct"}

// run is one schedule of a generated scenario: the file with its
// schedule pinned (what a reproducer replays) and its outcome.
type run struct {
	f *scenario.File
	o Outcome
}

// scheduleSeed is the scheduler seed of schedule j of the scenario of
// seed: the scenario's own seed for the first (so one schedule per
// scenario is the campaign of old), then a SplitMix64 mix of both.
func scheduleSeed(seed uint64, j int) uint64 {
	if j == 0 {
		return seed
	}
	z := seed + uint64(j)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// runSchedules runs f under the campaign's K schedules, each a distinct
// scheduler seed. The model has no snapshot of its state (it lives in
// Go objects and in the stacks of parked simulated threads), so every
// schedule rebuilds the host and the TDs from the file; the generated
// file itself is made once. Under pct the change points of schedule j
// are drawn over the scheduler steps schedule j-1 took (the first uses
// scenario.DefaultPCTSteps).
func (cfg Config) runSchedules(f *scenario.File, seed uint64) []run {
	k := max(cfg.Schedules, 1)
	runs := make([]run, 0, k)
	steps := 0
	for j := range k {
		g := f
		if j > 0 || cfg.Strategy == "pct" {
			c := *f
			s := scheduleSeed(seed, j)
			c.Schedule = scenario.Schedule{Seed: &s}
			if cfg.Strategy == "pct" {
				c.Schedule.Strategy = "pct"
				c.Schedule.Depth = max(cfg.Depth, 1)
				c.Schedule.Steps = steps
			}
			g = &c
		}
		o := RunOne(g)
		if o.Report != nil {
			steps = int(min(o.Report.Steps, 1<<30))
		}
		runs = append(runs, run{g, o})
	}
	return runs
}

// checkStrategy is the error of an unknown --strategy.
func checkStrategy(s string) error {
	for _, k := range Strategies {
		if s == k || s == "" {
			return nil
		}
	}
	return fmt.Errorf("strategy %q: want one of %v", s, Strategies)
}
