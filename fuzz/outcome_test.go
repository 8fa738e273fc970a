package fuzz

import (
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/check"
)

// A campaign whose injected faults the kernel answers counts those runs
// as kernel responses, by kind, apart from clean runs and violations, and
// writes a finding (and a reproducer) only for a violation.
func TestCampaignOutcomes(t *testing.T) {
	dir := t.TempDir()
	sum := mustCampaign(t, Config{Seed: 1, Runs: 6, Schedules: 1, Workers: 1, Out: dir,
		Inject: [][2]string{{"fail", "TDH.MEM.PAGE.REMOVE:1:0:TDX_OPERAND_INVALID"}, {"fail", "TDH.PHYMEM.PAGE.RECLAIM:2"}}})
	total := 0
	for _, n := range sum.Outcomes {
		total += n
	}
	if total != sum.Schedules || sum.Outcomes[check.ClassKernelResponse] == 0 {
		t.Fatalf("outcomes %v over %d schedules: want them all counted, some kernel responses", sum.Outcomes, sum.Schedules)
	}
	if sum.KernelResponses[check.RespKVMBugOn] == 0 && sum.KernelResponses[check.RespPagesLeaked] == 0 {
		t.Errorf("kernel responses %v: want kvm_bug_on or pages_leaked", sum.KernelResponses)
	}
	if sum.Outcomes[check.ClassViolation] == 0 && (len(sum.Findings) != 0 || len(sum.Violations) != 0) {
		t.Errorf("no violation, yet findings %+v, violations %v", sum.Findings, sum.Violations)
	}
	var b strings.Builder
	sum.WriteText(&b)
	if !strings.Contains(b.String(), "kernel_response") || !strings.Contains(b.String(), "kernel responses to injected faults") {
		t.Errorf("summary text:\n%s", b.String())
	}
}
