package fuzz

import (
	"errors"
	"testing"

	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/inject"
	"github.com/tdxsim/tdxsim/scenario"
)

// A run stopped by an injected allocation failure is KVM's answer, not a
// finding (an error_return kernel response): the error keeps ENOMEM and the injected cause through every
// wrap, from hostmem to the runner.
func TestInjectedENOMEMIsNotAFinding(t *testing.T) {
	f, err := scenario.Parse("enomem.yaml", []byte(`
inject: {alloc_fail: [{source: kvm.mmu_shadow_page_cache, nth: 1}]}
tds:
  - {name: a, memory: 64M, vcpus: 2}
timeline:
  - boot: {td: a, accept: eager}
`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = scenario.Run(f, scenario.Options{})
	if !errors.Is(err, errno.ENOMEM) || !errors.Is(err, inject.ErrAllocFailed) {
		t.Fatalf("run error %v: want ENOMEM caused by inject.ErrAllocFailed", err)
	}
	o := RunOne(f)
	if len(o.Broken) != 0 || o.Class != check.ClassKernelResponse {
		t.Fatalf("broken %v, class %s: want none, kernel_response", o.Broken, o.Class)
	}
	if kr := o.Report.KernelResponses[check.RespErrorReturn]; kr.Count != 1 {
		t.Errorf("kernel responses %+v: want one error_return", o.Report.KernelResponses)
	}
}
