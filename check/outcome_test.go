package check

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/inject"
)

func TestClassify(t *testing.T) {
	caused := Response{Kind: RespKVMBugOn, Kernel: "KVM_BUG_ON() in tdx_track() (TDH.MEM.TRACK)", Fault: "TDH.MEM.TRACK TDX_OPERAND_BUSY"}
	uncaused := Response{Kind: RespWarn, Kernel: "WARN_ON_ONCE() in tdx_pamt_put()"}
	for _, c := range []struct {
		name   string
		e      Ending
		class  string
		broken []string
	}{
		{"nothing", Ending{}, ClassClean, nil},
		{"passed evaluations only", Ending{Failed: map[string]int{MirrorSEPT: 0}}, ClassClean, nil},
		{"a caused response", Ending{Responses: []Response{caused}}, ClassKernelResponse, nil},
		{"an uncaused response breaks nothing by itself", Ending{Responses: []Response{uncaused}}, ClassClean, nil},
		{"a broken invariant beside a response", Ending{Failed: map[string]int{Teardown: 1, NoKVMBug: 2}, Responses: []Response{caused}},
			ClassViolation, []string{NoKVMBug, Teardown}},
		{"a step failed, nothing explains it", Ending{StepFailed: true}, ClassViolation, []string{StepCompletes}},
		{"a step failed and an invariant broke", Ending{StepFailed: true, Failed: map[string]int{GuestReadsBack: 1}}, ClassViolation, []string{GuestReadsBack}},
	} {
		class, broken := Classify(c.e)
		if class != c.class || !slices.Equal(broken, c.broken) {
			t.Errorf("%s: %s %v, want %s %v", c.name, class, broken, c.class, c.broken)
		}
	}
	if n := CountResponses([]Response{caused, caused, uncaused}); len(n) != 1 || n[RespKVMBugOn][caused.Kernel+" <- "+caused.Fault] != 2 {
		t.Errorf("CountResponses: %v", n)
	}
}

func seam(thread int32, leaf string, status uint64, detail string) event.Event {
	return event.Event{Kind: event.KindSeamcall, Thread: thread, Name: leaf, Status: status, Detail: detail}
}

func bugOn(thread int32, vm uint64, why string) event.Event {
	return event.Event{Kind: event.KindKVM, Thread: thread, Name: "KVM_BUG_ON", Args: [4]uint64{0, 0, vm}, Detail: why}
}

const busy = 0x8000020000000000

// Each response is traced to the injected fault the thread last met, to
// the fault that killed its VM, or to nothing.
func TestResponsesTrace(t *testing.T) {
	removeBusy := seam(1, "TDH.MEM.PAGE.REMOVE", busy, "TDX_OPERAND_BUSY(RAX) (injected)")
	removeBug := bugOn(1, 7, "TDH.MEM.PAGE.REMOVE failed at gpa 0x1000: TDX_OPERAND_BUSY(RAX)")
	for _, c := range []struct {
		name   string
		events []event.Event
		want   []Response
	}{
		{"BUSY past the kick: KVM_BUG_ON", []event.Event{
			removeBusy, {Kind: event.KindTDX, Thread: 1, Name: "kick"}, removeBusy, removeBug},
			[]Response{{RespKVMBugOn, "KVM_BUG_ON() in tdx_sept_remove_private_spte() (TDH.MEM.PAGE.REMOVE)", "TDH.MEM.PAGE.REMOVE TDX_OPERAND_BUSY"}}},
		{"a real failure is no kernel response to a fault", []event.Event{
			seam(1, "TDH.MEM.PAGE.REMOVE", busy, "TDX_OPERAND_BUSY(RAX)"), removeBug},
			[]Response{{RespKVMBugOn, "KVM_BUG_ON() in tdx_sept_remove_private_spte() (TDH.MEM.PAGE.REMOVE)", ""}}},
		{"a fault on another thread explains nothing", []event.Event{removeBusy, bugOn(2, 7, removeBug.Detail)},
			[]Response{{RespKVMBugOn, "KVM_BUG_ON() in tdx_sept_remove_private_spte() (TDH.MEM.PAGE.REMOVE)", ""}}},
		{"a BUSY retried to success explains nothing", []event.Event{
			seam(1, "TDH.MEM.PAGE.AUG", busy, "TDX_OPERAND_BUSY(RAX) (injected)"), seam(1, "TDH.MEM.PAGE.AUG", 0, ""),
			bugOn(1, 7, "fault at gfn 0x10 would split a present huge mirror SPTE at level 2M")},
			[]Response{{RespKVMBugOn, "KVM_BUG_ON()", ""}}},
		{"a fault of another leaf explains nothing", []event.Event{
			seam(1, "TDH.MEM.RANGE.BLOCK", busy, "TDX_OPERAND_BUSY(RAX) (injected)"), removeBug},
			[]Response{{RespKVMBugOn, "KVM_BUG_ON() in tdx_sept_remove_private_spte() (TDH.MEM.PAGE.REMOVE)", ""}}},
		{"the teardown of a VM a fault killed", []event.Event{
			seam(0, "TDH.MNG.KEY.CONFIG", busy, "TDX_OPERAND_BUSY(RAX) (injected)"),
			bugOn(0, 3, "TDH.MNG.KEY.CONFIG failed at gpa 0x0: TDX_OPERAND_BUSY(RAX)"),
			seam(0, "TDH.MNG.VPFLUSHDONE", 0xc000060700000000, "TDX_LIFECYCLE_STATE_INCORRECT"),
			{Kind: event.KindTDX, Name: "WARN", Detail: "TDH.MNG.VPFLUSHDONE failed for pfn 0x29: TDX_LIFECYCLE_STATE_INCORRECT"},
			{Kind: event.KindTDX, Name: "hkid_leaked", Args: [4]uint64{5, 0, 3}, Detail: "TDH.MNG.VPFLUSHDONE"},
			{Kind: event.KindTDX, Name: "WARN", Detail: "reclaim with HKID assigned failed for pfn 0x29: TDX_SUCCESS"}},
			[]Response{
				{RespKVMBugOn, "KVM_BUG_ON() in __tdx_td_init() (TDH.MNG.KEY.CONFIG)", "TDH.MNG.KEY.CONFIG TDX_OPERAND_BUSY"},
				{RespHKIDLeaked, "tdx_mmu_release_hkid() (TDH.MNG.VPFLUSHDONE)", "TDH.MNG.KEY.CONFIG TDX_OPERAND_BUSY"},
				{RespPagesLeaked, "tdx_reclaim_td_control_pages() (HKID still assigned)", "TDH.MNG.KEY.CONFIG TDX_OPERAND_BUSY"}}},
		{"a failed reclaim leaks the page", []event.Event{
			seam(0, "TDH.PHYMEM.PAGE.RECLAIM", 0xc000010000000000, "TDX_OPERAND_INVALID(RCX) (injected)"),
			{Kind: event.KindTDX, Name: "WARN", Detail: "TDH.PHYMEM.PAGE.RECLAIM failed for pfn 0x40: TDX_OPERAND_INVALID(RCX)"}},
			[]Response{{RespPagesLeaked, "tdx_reclaim_page()", "TDH.PHYMEM.PAGE.RECLAIM TDX_OPERAND_INVALID"}}},
		{"a failed PAMT.REMOVE WARNs", []event.Event{
			seam(0, "TDH.PHYMEM.PAMT.REMOVE", 0xc000010000000000, "TDX_OPERAND_INVALID(RCX) (injected)"),
			{Kind: event.KindTDX, Name: "WARN", Detail: "TDH.PHYMEM.PAMT.REMOVE failed for pfn 0x40: TDX_OPERAND_INVALID(RCX)"}},
			[]Response{{RespWarn, "WARN_ON_ONCE() in tdx_pamt_put() (TDH.PHYMEM.PAMT.REMOVE)", "TDH.PHYMEM.PAMT.REMOVE TDX_OPERAND_INVALID"}}},
	} {
		r := NewResponses()
		for _, e := range c.events {
			r.Emit(e)
		}
		if got := r.List(); !slices.Equal(got, c.want) {
			t.Errorf("%s:\n got %v\nwant %v", c.name, got, c.want)
		}
	}
}

// guest_memfd freeing a page the S-EPT of a TD an injected fault killed
// still maps is the kernel's window, counted with whether the page was
// handed out again; with no such TD it stays no_use_after_free.
func TestGmemWindow(t *testing.T) {
	free := event.Event{Kind: event.KindViolation, Thread: 0, Step: 9, Name: hostmem.RuleFreeTDXOwned, Args: [4]uint64{0x40}, Detail: "free pfn 0x40"}
	r := NewResponses()
	r.Emit(free)
	if r.Excused(free) || len(r.List()) != 0 {
		t.Fatalf("no dead TD: excused %v, responses %v", r.Excused(free), r.List())
	}
	r.Emit(seam(1, "TDH.MEM.PAGE.REMOVE", 0xc000010000000000, "TDX_OPERAND_INVALID(RCX) (injected)"))
	r.Emit(bugOn(1, 4, "TDH.MEM.PAGE.REMOVE failed at gpa 0x0: TDX_OPERAND_INVALID(RCX)"))
	free.Step = 12
	r.Emit(free)
	if !r.Excused(free) {
		t.Fatal("the window after an injected REMOVE failure is not excused")
	}
	r.Emit(event.Event{Kind: event.KindAlloc, Args: [4]uint64{0x40, 0}})
	if opened, reused := r.Window(); opened != 1 || reused != 1 {
		t.Errorf("window opened %d, reused %d; want 1, 1", opened, reused)
	}
	if l := r.List(); len(l) != 2 || l[1].Kind != RespGmemFreedMapped || l[1].Fault != "TDH.MEM.PAGE.REMOVE TDX_OPERAND_INVALID" {
		t.Errorf("responses %v", l)
	}
}

// A run's error is traced through its chain or the faults it names.
func TestErrorCause(t *testing.T) {
	r := NewResponses()
	r.Emit(seam(0, "TDH.MR.FINALIZE", busy, "TDX_OPERAND_BUSY(RAX) (injected)"))
	enomem := errno.Wrap("kvm_mmu_topup_memory_cache", errno.ENOMEM, fmt.Errorf("out of memory (%w)", inject.ErrAllocFailed))
	for _, c := range []struct {
		err   error
		fault string
		own   bool
	}{
		{nil, "", false},
		{enomem, "allocation failed", true},
		{errno.New("KVM_TDX_FINALIZE_VM", errno.EBUSY, "TDH.MR.FINALIZE: TDX_OPERAND_BUSY"), "TDH.MR.FINALIZE TDX_OPERAND_BUSY", true},
		{errno.New("KVM_RUN", errno.EIO, "TDH.MEM.PAGE.AUG: TDX_OPERAND_BUSY"), "", false},
		{errors.New("KVM_RUN: EIO: VM is dead (x)"), "", false},
	} {
		fault, own := r.ErrorCause(c.err)
		if fault != c.fault || own != c.own {
			t.Errorf("%v: %q %v, want %q %v", c.err, fault, own, c.fault, c.own)
		}
	}
	if k := ErrorKernel(enomem); k != "kvm_mmu_topup_memory_cache returns -ENOMEM" {
		t.Errorf("ErrorKernel: %s", k)
	}
	// The EIO of a VM an injected fault killed is its KVM_BUG_ON's echo.
	r.Emit(seam(1, "TDH.MEM.TRACK", busy, "TDX_OPERAND_BUSY(RAX) (injected)"))
	r.Emit(bugOn(1, 2, "TDH.MEM.TRACK failed at gpa 0x0: TDX_OPERAND_BUSY(RAX)"))
	if fault, own := r.ErrorCause(errors.New("KVM_RUN: EIO: VM is dead (x)")); fault != "TDH.MEM.TRACK TDX_OPERAND_BUSY" || own {
		t.Errorf("dead VM's EIO: %q %v", fault, own)
	}
}

// Teardown leftovers are allowed as far as the kernel leaked on purpose.
func TestTeardownOnPurpose(t *testing.T) {
	for _, c := range []struct {
		name string
		l    Leftovers
		n    int
	}{
		{"a leaked page and its pair, on purpose", Leftovers{LeakedPages: 3, ChargedPages: 1, DPAMTPairs: 1, LeakedOnPurpose: 1}, 0},
		{"the same, not on purpose", Leftovers{LeakedPages: 3, ChargedPages: 1, DPAMTPairs: 1}, 3},
		{"more than the kernel leaked", Leftovers{LeakedPages: 4, DPAMTPairs: 1, LeakedOnPurpose: 1}, 1},
		{"an HKID leaked after a fault", Leftovers{LeakedPages: 14, DPAMTPairs: 1, HKIDsInUse: 1, LeakedOnPurpose: 12, HKIDsLeaked: 1}, 0},
		{"an HKID still assigned, not leaked", Leftovers{HKIDsInUse: 1}, 1},
		{"a dead VM's module pages and a leak", Leftovers{Bugged: true, LeakedPages: 7, HeldByModule: 5, LeakedOnPurpose: 1, DPAMTPairs: 1}, 0},
	} {
		if v := TeardownReclaimsAll(c.l); len(v) != c.n {
			t.Errorf("%s: %v, want %d violations", c.name, v, c.n)
		}
	}
	if n := (Leftovers{LeakedPages: 3, DPAMTPairs: 1, LeakedOnPurpose: 1}).OnPurpose(); n != 3 {
		t.Errorf("OnPurpose %d, want 3", n)
	}
}
