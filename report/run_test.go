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

// The text and JSON reports say how the run ended and which kernel
// responses it had, with their causes.
func TestOutcomeAndResponses(t *testing.T) {
	reused := int64(0)
	r := &Run{Outcome: "kernel_response", Teardown: Teardown{LeakedPages: 3, LeakedOnPurpose: 3},
		KernelResponses: map[string]KernelResponse{
			"pages_leaked":            {Count: 1, Causes: map[string]int{"tdx_reclaim_page() <- TDH.PHYMEM.PAGE.RECLAIM TDX_OPERAND_INVALID": 1}},
			"gmem_freed_while_mapped": {Count: 2, Causes: map[string]int{"kvm_gmem_punch_hole() <- TDH.MEM.PAGE.REMOVE TDX_OPERAND_BUSY": 2}, Reused: &reused},
		}}
	var b strings.Builder
	r.WriteText(&b)
	for _, want := range []string{"outcome: kernel_response", "kernel response pages_leaked: 1", "  1  tdx_reclaim_page() <- TDH.PHYMEM.PAGE.RECLAIM",
		"kernel response gmem_freed_while_mapped: 2, 0 pages reused", "3 pages leaked (3 on purpose, after injected faults)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"outcome": "kernel_response"`, `"kernel_responses": {`, `"reused": 0`, `"leaked_on_purpose": 3`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("JSON report lacks %s", want)
		}
	}
}
