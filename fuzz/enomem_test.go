package fuzz

import (
	"testing"

	"github.com/tdxsim/tdxsim/scenario"
)

// A run stopped by an injected allocation failure is KVM's answer, not a
// finding: the error keeps ENOMEM and the injected cause through every
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
	if !injectedENOMEM(err) {
		t.Fatalf("run error %v: want ENOMEM caused by inject.ErrAllocFailed", err)
	}
	if o := RunOne(f); len(o.Broken) != 0 {
		t.Fatalf("broken %v, want none", o.Broken)
	}
}
