package check

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/guest"
)

// The checks below read what the runner gathered rather than the model:
// what the layers reported, how a step ended, what teardown left.

// Group is the violations of one invariant at one evaluation (none: it
// passed).
type Group struct {
	Invariant  string
	Violations []string
}

// Reported is what the layers reported themselves since the last
// evaluation: rule-violation events, lock-order reports (sched's
// lockdep) and the guest's problems (it read back something it did not
// write, or took an unexpected #VE), by TD.
type Reported struct {
	Events    []event.Event
	LockOrder []string
	// Guest holds "TD: problem" lines.
	Guest []string
}

// Reports turns what the layers reported into invariant results:
// guest_reads_back, lock_order and no_violation_events always, then any
// other invariant a reported rule breaks, by name.
func Reports(r Reported) []Group {
	byInv := map[string][]string{}
	for _, e := range r.Events {
		if strings.HasPrefix(e.Name, "lockdep.") {
			continue // counted from the lock-order checker itself
		}
		inv := eventInvariant(e)
		byInv[inv] = append(byInv[inv], e.Name+": "+e.Detail)
	}
	byInv[LockOrder] = append(byInv[LockOrder], r.LockOrder...)
	byInv[GuestReadsBack] = append(byInv[GuestReadsBack], r.Guest...)
	var out []Group
	for _, inv := range []string{GuestReadsBack, LockOrder, Events} {
		out = append(out, Group{inv, byInv[inv]})
		delete(byInv, inv)
	}
	for _, inv := range slices.Sorted(maps.Keys(byInv)) {
		out = append(out, Group{inv, byInv[inv]})
	}
	return out
}

// ConversionProgressAfter checks, after a step that ran guest workloads,
// that none of its conversions ended with the guest giving up on
// TDVMCALL_RETRY; lastRetry is each TD's last EAGAIN reason ("TD: why").
func ConversionProgressAfter(err error, lastRetry []string) []string {
	var mf *guest.MapGPAError
	if !errors.As(err, &mf) || !mf.Stuck() {
		return nil
	}
	return []string{fmt.Sprintf("%v: the guest gave up after %d retries without progress; the host's last EAGAIN: %s",
		mf, guest.MapGPARetries, strings.Join(lastRetry, "; "))}
}

// KVMBugFree is no_kvm_bug for one TD: why is its KVM_BUG_ON ("" for
// none). Kernel: KVM_BUG_ON().
func KVMBugFree(td, why string) []string {
	if why == "" {
		return nil
	}
	return []string{fmt.Sprintf("%s: %s", td, why)}
}

// Leftovers is what the host still holds after every TD's teardown.
type Leftovers struct {
	// Bugged: a VM died of KVM_BUG_ON; what the module still holds is
	// then left on purpose (it may still be mapped).
	Bugged bool
	// LeakedPages is host pages not back in the allocator.
	LeakedPages int64
	// HeldByModule is pages the TDX module still holds.
	HeldByModule uint64
	// ChargedPages is pages still charged to a VM.
	ChargedPages uint64
	HKIDsInUse   int
	DPAMTPairs   int
}

// TeardownReclaimsAll is teardown_reclaims_all: after teardown nothing
// is owned by or charged to a TD, but for what a dead VM's module keeps.
func TeardownReclaimsAll(l Leftovers) []string {
	var out []string
	if l.Bugged {
		if l.LeakedPages > int64(l.HeldByModule) {
			out = append(out, fmt.Sprintf("%d host pages not back in the allocator, only %d of them held by the TDX module", l.LeakedPages, l.HeldByModule))
		}
		return out
	}
	if l.LeakedPages != 0 {
		out = append(out, fmt.Sprintf("%d host pages not back in the allocator", l.LeakedPages))
	}
	if l.ChargedPages != 0 {
		out = append(out, fmt.Sprintf("%d pages still charged", l.ChargedPages))
	}
	if l.HKIDsInUse != 0 {
		out = append(out, fmt.Sprintf("%d HKIDs still assigned", l.HKIDsInUse))
	}
	if l.DPAMTPairs != 0 {
		out = append(out, fmt.Sprintf("%d DPAMT pairs still installed", l.DPAMTPairs))
	}
	return out
}
