package scenario

import (
	"slices"
	"testing"

	"github.com/tdxsim/tdxsim/tdxmodule"
)

// Options.Coverage receives the S-EPT transitions the run's leaves made,
// each listed by tdxmodule.Transitions, and the lock-order edges; a run
// without it is the same run.
func TestCoverage(t *testing.T) {
	f, err := Parse("cov.yaml", []byte(`
tds:
  - {name: a, memory: 16M, vcpus: 2}
timeline:
  - boot: {td: a, accept: lazy, upfront: 2M}
  - touch: {td: a, count: 64, pattern: random}
  - mmu_notifier: {td: a, gpa: 0, size: 2M}
`))
	if err != nil {
		t.Fatal(err)
	}
	var cv Coverage
	r1, err := Run(f, Options{Coverage: &cv})
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := Run(f, Options{})
	if r1.Schedule != r2.Schedule {
		t.Errorf("coverage changed the run: %s vs %s", r1.Schedule, r2.Schedule)
	}
	all := tdxmodule.Transitions()
	for _, tr := range cv.Transitions {
		if !slices.Contains(all, tr) {
			t.Errorf("%v is not in tdxmodule.Transitions", tr)
		}
	}
	for _, want := range []tdxmodule.Transition{
		{Leaf: "TDH.MEM.PAGE.AUG", From: tdxmodule.SeptFree, To: tdxmodule.SeptPending},
		{Leaf: "TDG.MEM.PAGE.ACCEPT", From: tdxmodule.SeptPending, To: tdxmodule.SeptMapped},
	} {
		if !slices.Contains(cv.Transitions, want) {
			t.Errorf("no %v in %v", want, cv.Transitions)
		}
	}
	if len(cv.LockEdges) == 0 {
		t.Error("no lock-order edges")
	}
}
