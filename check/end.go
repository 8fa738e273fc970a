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
	// LeakedOnPurpose is the pages KVM's TDX code left behind on purpose
	// after a failed reclaim (tdx.Stats.Leaked: tdx_reclaim_page(),
	// tdx_sept_free_private_spt(), control pages left while the HKID is
	// assigned), when every such leak was traced to an injected fault; a
	// leaked page keeps its Dynamic PAMT pair (no tdx_pamt_put()), so up
	// to one pair (two pages) per leaked page is on purpose too.
	LeakedOnPurpose int64
	// HKIDsLeaked is the HKIDs tdx_mmu_release_hkid() leaked after an
	// injected fault.
	HKIDsLeaked int
}

// OnPurpose is how many of the leaked pages the kernel left on purpose:
// the leaked pages themselves and the Dynamic PAMT pairs they keep.
func (l Leftovers) OnPurpose() int64 {
	pairs := min(int64(l.DPAMTPairs), l.LeakedOnPurpose)
	return max(0, min(l.LeakedPages, l.LeakedOnPurpose+2*pairs))
}

// TeardownReclaimsAll is teardown_reclaims_all: after teardown nothing
// is owned by or charged to a TD, but for what a dead VM's module keeps
// and what the kernel leaks on purpose after an injected fault (the
// pages tdx_reclaim_page() could not take back and their Dynamic PAMT
// pairs, an HKID tdx_mmu_release_hkid() could not free, the charge of
// those pages).
func TeardownReclaimsAll(l Leftovers) []string {
	var out []string
	onPurpose := l.LeakedOnPurpose + 2*min(int64(l.DPAMTPairs), l.LeakedOnPurpose)
	if l.Bugged {
		if l.LeakedPages > int64(l.HeldByModule)+onPurpose {
			why := fmt.Sprintf("%d host pages not back in the allocator, only %d of them held by the TDX module", l.LeakedPages, l.HeldByModule)
			if onPurpose > 0 {
				why += fmt.Sprintf(" and %d leaked on purpose", onPurpose)
			}
			out = append(out, why)
		}
		return out
	}
	if l.LeakedPages > onPurpose {
		if onPurpose == 0 {
			out = append(out, fmt.Sprintf("%d host pages not back in the allocator", l.LeakedPages))
		} else {
			out = append(out, fmt.Sprintf("%d host pages not back in the allocator, %d of them leaked on purpose", l.LeakedPages, onPurpose))
		}
	}
	if l.ChargedPages > uint64(max(0, l.OnPurpose())) {
		out = append(out, fmt.Sprintf("%d pages still charged", l.ChargedPages))
	}
	if l.HKIDsInUse > l.HKIDsLeaked {
		out = append(out, fmt.Sprintf("%d HKIDs still assigned", l.HKIDsInUse))
	}
	if int64(l.DPAMTPairs) > l.LeakedOnPurpose {
		out = append(out, fmt.Sprintf("%d DPAMT pairs still installed", l.DPAMTPairs))
	}
	return out
}
