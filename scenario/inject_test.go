package scenario

import (
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/check"
)

// Each injected fault gets KVM's answer: a BUSY is retried; a failed
// S-EPT SEAMCALL is KVM_BUG_ON, the VM dies and the other TD is not
// touched; a failed top-up allocation is -ENOMEM to the faulting path; a
// hardware error poisons the page. The run's report says what was
// injected.
func TestInjectedFaults(t *testing.T) {
	const tds = `
tds:
  - {name: a, memory: 64M, vcpus: 2}
  - {name: b, memory: 64M, vcpus: 1}
timeline:
  - boot: {td: a, accept: lazy, upfront: 8M}
  - boot: {td: b, accept: eager}
  - convert: {td: a, count: 8, size: 16K}
  - touch: {td: a, pattern: random, count: 500}
  - convert: {td: b, count: 4, size: 16K}
`
	cases := []struct {
		name, inject string
		// bugged is the TD KVM_BUG_ON must kill ("" for none); err a
		// run error the fault must cause ("" for none).
		bugged, err string
		injected    string // a key of report.Injected that must be non-zero
		// response is the kind of kernel response the outcome must
		// count ("" for none: the run is clean).
		response string
	}{
		{"busy AUG retried", "inject: {busy: 0.3, busy_leaves: [TDH.MEM.PAGE.AUG]}", "", "", "TDX_OPERAND_BUSY", ""},
		{"busy BLOCK retried with vCPUs kicked", "inject: {fail: [{leaf: TDH.MEM.RANGE.BLOCK, nth: 2, every: 5, status: TDX_OPERAND_BUSY}]}", "", "", "TDH.MEM.RANGE.BLOCK TDX_OPERAND_BUSY", ""},
		{"REMOVE fails", "inject: {fail: [{leaf: TDH.MEM.PAGE.REMOVE, nth: 2}]}", "a", "", "TDH.MEM.PAGE.REMOVE TDX_OPERAND_INVALID", check.RespKVMBugOn},
		{"DEMOTE fails", "inject: {fail: [{leaf: TDH.MEM.PAGE.DEMOTE, nth: 1}]}", "a", "", "TDH.MEM.PAGE.DEMOTE TDX_OPERAND_INVALID", check.RespKVMBugOn},
		{"TRACK fails", "inject: {fail: [{leaf: TDH.MEM.TRACK, nth: 1}]}", "a", "", "TDH.MEM.TRACK TDX_OPERAND_INVALID", check.RespKVMBugOn},
		// A failed Dynamic PAMT add is a WARN and -EIO to the caller
		// (tdx_pamt_get), not a KVM_BUG_ON.
		{"PAMT.ADD fails", "inject: {fail: [{leaf: TDH.PHYMEM.PAMT.ADD, nth: 3}]}", "", "EIO", "TDH.PHYMEM.PAMT.ADD TDX_OPERAND_INVALID", check.RespErrorReturn},
		// A top-up that gets fewer pages than the fault needs fails the
		// fault with ENOMEM (here the first one, the vCPU's first load
		// of the roots); one that already has enough does not.
		{"page-table top-up fails", "inject: {alloc_fail: [{source: kvm.mmu_shadow_page_cache, nth: 1}]}", "", "ENOMEM", "allocation failed", check.RespErrorReturn},
		{"top-up short of capacity only", "inject: {alloc_fail: [{source: kvm.mmu_shadow_page_cache, nth: 20}]}", "", "", "allocation failed", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Run(mustParse(t, "inject.yaml", c.inject+tds), Options{})
			if r == nil {
				t.Fatal(err)
			}
			if r.Injected[c.injected] == 0 {
				t.Errorf("nothing injected under %q: %v", c.injected, r.Injected)
			}
			if c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
				t.Errorf("run error %v, want %s", err, c.err)
			}
			for _, td := range r.TDs {
				switch {
				case td.Name == c.bugged && td.Bugged == "":
					t.Errorf("%s was not KVM_BUG_ON'd", td.Name)
				case td.Name != c.bugged && td.Bugged != "":
					t.Errorf("%s bugged (%s) by a fault in another TD or a retried one", td.Name, td.Bugged)
				}
			}
			// Every one is the kernel's answer, not a finding: no
			// invariant breaks (a KVM_BUG_ON traced to the fault is no
			// no_kvm_bug violation; guest_memfd freeing a page the dead
			// TD still maps is the window the pinning removal accepts).
			for _, v := range r.Violations {
				t.Errorf("violation: %s", v)
			}
			wantClass := check.ClassKernelResponse
			if c.response == "" {
				wantClass = check.ClassClean
			}
			if r.Outcome != wantClass || c.response != "" && r.KernelResponses[c.response].Count == 0 {
				t.Errorf("outcome %s, responses %+v: want %s with %q", r.Outcome, r.KernelResponses, wantClass, c.response)
			}
			if c.bugged != "" && (r.Teardown.HeldByModule == 0 || r.Teardown.LeakedPages > int64(r.Teardown.HeldByModule)) {
				t.Errorf("teardown of the dead VM: %d pages not back, %d held by the module", r.Teardown.LeakedPages, r.Teardown.HeldByModule)
			}
			t.Logf("injected %v; error %v; %d violations; %d pages not back, %d held by the module", r.Injected, err, len(r.Violations),
				r.Teardown.LeakedPages, r.Teardown.HeldByModule)
		})
	}
}

// A hostile guest's operations get the real statuses (an ACCEPT at a
// level the module refuses, of a page accepted twice, at a GPA the host
// mapped smaller; MapGPA refusals), while vCPUs race and host events run
// beside them, and the host keeps every invariant and is never bugged.
func TestHostileGuest(t *testing.T) {
	f := mustParse(t, "hostile.yaml", `
tds:
  - {name: a, memory: 128M, vcpus: 3, memslots: [{size: 64M}, {gpa: 96M, size: 64M}]}
  - {name: b, memory: 64M, vcpus: 2, conversion: in_place}
timeline:
  - boot: {td: a, accept: lazy, upfront: 16M}
  - boot: {td: b, accept: eager}
  - hostile: {td: a, ops: 1500}
  - parallel:
      - hostile: {td: b, ops: 1500}
      - mmu_notifier: {td: b, gpa: 4M, size: 4M}
      - memory_type_change: {td: b, gpa: 8M, size: 2M}
  - touch: {td: a, pattern: sequential, write: false}
  - touch: {td: b, pattern: sequential, write: false}
`)
	r, err := Run(f, Options{})
	if err != nil {
		t.Fatalf("%v\n%v", err, r.Violations)
	}
	if len(r.Violations) > 0 {
		t.Fatalf("violations: %v", r.Violations)
	}
	for _, want := range []string{"accept: TDX_OPERAND_INVALID(RCX)", "accept: TDX_PAGE_ALREADY_ACCEPTED", "accept: TDX_SUCCESS",
		"accept: TDX_PAGE_SIZE_MISMATCH(0x1)", "mapgpa: TDVMCALL_STATUS_SUCCESS", "mapgpa: TDVMCALL_STATUS_INVALID_OPERAND",
		"accept: exit to userspace: memory fault EFAULT", "touch: ok", "convert back: ok"} {
		if r.Hostile[want] == 0 {
			t.Errorf("no %q among %v", want, r.Hostile)
		}
	}
	for _, td := range r.TDs {
		if td.Bugged != "" {
			t.Errorf("%s bugged by guest input: %s", td.Name, td.Bugged)
		}
	}
}

// A hardware memory error on a private page: guest_memfd zaps it from
// every mapping (kvm_gmem_error_folio) and keeps the folio; the guest's
// next access exits with EHWPOISON (the VMM would inject a machine
// check); the other TD is not touched, nothing is bugged, and teardown
// gives everything back.
func TestHWPoisonPrivatePage(t *testing.T) {
	f := mustParse(t, "poison.yaml", `
tds:
  - {name: a, memory: 64M, vcpus: 1}
  - {name: b, memory: 64M, vcpus: 1}
timeline:
  - boot: {td: a, accept: eager}
  - boot: {td: b, accept: eager}
  - memory_failure: {td: a, gpa: 8M}
  - touch: {td: b, pattern: sequential}
  - touch: {td: a, pattern: sequential, start: 8M, size: 4K, count: 1}
    expect_error: EHWPOISON
`)
	r, err := Run(f, Options{})
	if err != nil || len(r.Violations) > 0 || r.Failed() {
		t.Fatalf("%v; violations %v; expectations %+v", err, r.Violations, r.Expectations)
	}
	for _, td := range r.TDs {
		if td.Bugged != "" {
			t.Errorf("%s bugged: %s", td.Name, td.Bugged)
		}
	}
	if r.Teardown.LeakedPages != 0 {
		t.Errorf("%d pages leaked", r.Teardown.LeakedPages)
	}
}

// A TRACK that is BUSY on every call outside the kernel's protocol: the
// first attempt of each tdh_do_no_vcpus() is BUSY, the kick ends the
// contention and the retry succeeds, so the VM lives (on hardware the
// retry is "guaranteed to succeed absent bugs"). Kernel: tdh_do_no_vcpus().
func TestBusyEndedByKick(t *testing.T) {
	r := mustRun(t, "kick.yaml", `
inject: {fail: [{leaf: TDH.MEM.TRACK, nth: 1, every: 1, status: TDX_OPERAND_BUSY}]}
tds: [{name: a, memory: 64M, vcpus: 2}]
timeline:
  - boot: {td: a, accept: lazy, upfront: 8M}
  - convert: {td: a, count: 4, size: 16K}
`)
	if r.Injected["TDH.MEM.TRACK TDX_OPERAND_BUSY"] == 0 || r.Injected["busy ended by kick"] == 0 {
		t.Errorf("injected %v: want BUSYs on TRACK and some ended by the kick", r.Injected)
	}
	if r.Failed() {
		t.Errorf("the run failed: %v", r.Violations)
	}
}
