package scenario

import (
	"errors"
	"strings"
	"testing"
)

// BUSY at rate 1 on every leaf, hostile guests racing host events: the
// rate injects only where a contender can exist, so the TD build (TDH.MNG.CREATE,
// ADDCX, INIT, VP.*, PAGE.ADD, MR.*: no contender under the kernel's
// serialization) never fails with EIO, and teardown's RECLAIMs never
// leak. Every BUSY that is injected is one KVM retries: the fault's
// retry finds the contender gone, tdh_do_no_vcpus()'s kick ends the vCPU
// and epoch contention. Nothing is bugged, nothing leaks.
func TestBusyEverywhereOnlyContends(t *testing.T) {
	r := mustRun(t, "busy-all.yaml", `
inject: {busy: 1}
tds:
  - {name: a, memory: 64M, vcpus: 2}
  - {name: b, memory: 64M, vcpus: 2, conversion: in_place}
timeline:
  - boot: {td: a, accept: lazy, upfront: 8M}
  - boot: {td: b, accept: eager}
  - hostile: {td: a, ops: 300}
  - parallel:
      - convert: {td: a, count: 4, size: 16K}
      - mmu_notifier: {td: b, gpa: 4M, size: 4M}
  - touch: {td: a, pattern: random, count: 200}
`)
	t.Logf("injected %v", r.Injected)
	if r.Failed() || len(r.Violations) > 0 {
		t.Errorf("violations %v", r.Violations)
	}
	for _, td := range r.TDs {
		if td.Bugged != "" {
			t.Errorf("%s bugged: %s", td.Name, td.Bugged)
		}
	}
	if r.Teardown.LeakedPages != 0 {
		t.Errorf("%d pages leaked", r.Teardown.LeakedPages)
	}
	for _, key := range []string{"TDX_OPERAND_BUSY", "busy by vcpu", "busy by epoch", "busy ended by kick",
		"busy ended by retry", "busy without contender (not injected)"} {
		if r.Injected[key] == 0 {
			t.Errorf("injected[%q] = 0: %v", key, r.Injected)
		}
	}
	for key := range r.Injected {
		if strings.HasPrefix(key, "TDH.") || key == "busy module bug" {
			t.Errorf("injected has %q: the rate made a module-bug failure", key)
		}
	}
}

// busy_leaves naming a leaf no contender can make BUSY is bad input (the
// rate would never fire there): one line, before any work.
func TestBusyLeafWithoutContenderRefused(t *testing.T) {
	_, err := Parse("e.yaml", []byte("tds: [{memory: 64M}]\ninject: {busy: 0.1, busy_leaves: [TDH.MEM.PAGE.AUG, TDH.MNG.CREATE]}\n"))
	var ie *InputError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "inject.busy_leaves[1]") || !strings.Contains(err.Error(), "no contender") {
		t.Fatalf("got %v, want inject.busy_leaves[1]: no contender ...", err)
	}
}
