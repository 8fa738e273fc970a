package check

import (
	"slices"
	"testing"

	"github.com/tdxsim/tdxsim/event"
)

// Reported rules land on their invariants, the three always-run ones
// first; teardown leftovers are forgiven only as far as a dead VM's
// module holds them.
func TestEnd(t *testing.T) {
	gs := Reports(Reported{Events: []event.Event{{Name: "hostmem.double-free", Detail: "x"}, {Name: "lockdep.cycle"}, {Name: "kvm.other"}},
		LockOrder: []string{"A -> B -> A"}, Guest: []string{"td0: read 1, want 2"}})
	var names []string
	for _, g := range gs {
		names = append(names, g.Invariant)
	}
	if want := []string{GuestReadsBack, LockOrder, Events, NoUseAfterFree}; !slices.Equal(names, want) {
		t.Fatalf("invariants %v, want %v", names, want)
	}
	if len(gs[0].Violations) != 1 || len(gs[1].Violations) != 1 || len(gs[2].Violations) != 1 || gs[3].Violations[0] != "hostmem.double-free: x" {
		t.Errorf("%+v", gs)
	}
	if v := TeardownReclaimsAll(Leftovers{Bugged: true, LeakedPages: 5, HeldByModule: 5, ChargedPages: 3}); len(v) != 0 {
		t.Errorf("bugged, held by the module: %v", v)
	}
	if v := TeardownReclaimsAll(Leftovers{LeakedPages: 1, ChargedPages: 1, HKIDsInUse: 1, DPAMTPairs: 1}); len(v) != 4 {
		t.Errorf("leftovers: %v", v)
	}
	if KVMBugFree("td0", "") != nil || len(KVMBugFree("td0", "BUSY")) != 1 {
		t.Error("KVMBugFree")
	}
	if ConversionProgressAfter(nil, nil) != nil {
		t.Error("no error is progress")
	}
}
