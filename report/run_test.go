package report

import (
	"fmt"
	"strings"
	"testing"
)

// The text report sums the violations up: the total, by invariant, and
// the first TextViolations lines; JSON lists up to MaxViolations.
func TestTextViolationsSummary(t *testing.T) {
	r := &Run{ViolationsTotal: 150, Checks: Checks{Failed: map[string]int{"pamt": 3}}}
	for i := range MaxViolations {
		r.Violations = append(r.Violations, fmt.Sprintf("pamt at step %d: bad", i))
	}
	var b strings.Builder
	r.WriteText(&b)
	out := b.String()
	if !strings.Contains(out, "violations: 150 (pamt in 3 evaluations)") || !strings.Contains(out, "... 140 more") ||
		strings.Contains(out, "step 10:") || !strings.Contains(out, "step 9:") {
		t.Fatalf("%s", out)
	}
}
