package scenario

import (
	"errors"

	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/report"
)

// uncausedBug is td's KVM_BUG_ON reason when no injected fault explains
// it ("" when the VM was not bugged, or an injected fault killed it: the
// kernel's answer, counted as a kernel response instead).
func (rn *runner) uncausedBug(td *tdRun) string {
	if td.bugged == "" || td.m != nil && rn.resp.BugCaused(uint64(td.m.VM.ID())) {
		return ""
	}
	return td.bugged
}

// leakedOnPurpose is what the kernel leaked on purpose after injected
// faults: the pages KVM's TDX code counted as leaked (tdx.Host.LeakedPages)
// when every leak it reported was traced to an injected fault (else none:
// a leak with no fault behind it is a finding), and the HKIDs
// tdx_mmu_release_hkid() leaked after one.
func (rn *runner) leakedOnPurpose() (pages int64, hkids int) {
	for _, r := range rn.resp.List() {
		switch {
		case r.Kind == check.RespHKIDLeaked && r.Caused():
			hkids++
		case r.Caused():
		case r.Kind == check.RespPagesLeaked, r.Kind == check.RespHKIDLeaked, r.Kind == check.RespWarn:
			return 0, 0
		}
	}
	return rn.host.LeakedPages(), hkids
}

// classify sets the report's outcome and kernel responses once the run's
// checks are done; err is how the run ended (outcome()).
func (rn *runner) classify(err error) {
	r := rn.r
	rs := rn.resp.List()
	stepFailed := false
	if err != nil && errors.Is(err, ErrRun) {
		fault, own := rn.resp.ErrorCause(rn.runErr)
		switch {
		case fault == "":
			stepFailed = true
		case own:
			rs = append(rs, check.Response{Kind: check.RespErrorReturn, Kernel: check.ErrorKernel(rn.runErr), Fault: fault})
		}
	}
	r.Outcome, _ = check.Classify(check.Ending{Failed: r.Checks.Failed, StepFailed: stepFailed, Responses: rs})
	counts := check.CountResponses(rs)
	if len(counts) == 0 {
		return
	}
	r.KernelResponses = map[string]report.KernelResponse{}
	for kind, causes := range counts {
		kr := report.KernelResponse{Causes: causes}
		for _, n := range causes {
			kr.Count += n
		}
		if kind == check.RespGmemFreedMapped {
			_, reused := rn.resp.Window()
			kr.Reused = &reused
		}
		r.KernelResponses[kind] = kr
	}
}
