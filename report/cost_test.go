package report

import (
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/event"
)

// Every default figure names a source; the 4 KiB lazy fault adds up to
// the Dstack anchor.
func TestDefaultCosts(t *testing.T) {
	c := DefaultCosts()
	for k, v := range c {
		if v.NS == 0 || v.Source == "" {
			t.Errorf("%s: %+v", k, v)
		}
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	fault := 2*c["TDG.MEM.PAGE.ACCEPT"].NS + c["TDH.VP.ENTER"].NS + c["TDH.MEM.PAGE.AUG"].NS
	if fault != 8000 || !strings.Contains(c["TDH.MEM.PAGE.AUG"].Source, "Dstack") {
		t.Fatalf("4K fault %d ns", fault)
	}
	if err := (CostTable{"AUG": {}}).Validate(); err == nil {
		t.Fatal("bad leaf name accepted")
	}
}

// Per-level figures apply to calls that did the level's work; a phase
// lasts as long as its busiest thread plus idle time.
func TestClock(t *testing.T) {
	costs := DefaultCosts().With(map[string]uint64{"TDH.MEM.PAGE.AUG": 100})
	accept2M := event.Event{Kind: event.KindTdcall, Name: "TDG.MEM.PAGE.ACCEPT", Args: [4]uint64{0x200000 | 1}}
	exit := accept2M
	exit.Detail = "ept_violation"
	if got := costs.Of(accept2M); got != costs["TDG.MEM.PAGE.ACCEPT/2M"].NS {
		t.Fatalf("2M accept %d", got)
	}
	if got := costs.Of(exit); got != costs["TDG.MEM.PAGE.ACCEPT"].NS {
		t.Fatalf("2M accept that exited %d", got)
	}
	k := NewClock(costs)
	k.Name(1, "vcpu0")
	k.Begin("boot")
	k.Emit(event.Event{Kind: event.KindSeamcall, Name: "TDH.MEM.PAGE.AUG", Thread: 1})
	k.Emit(event.Event{Kind: event.KindSeamcall, Name: "TDH.MEM.PAGE.AUG", Thread: 1})
	k.Emit(event.Event{Kind: event.KindSeamcall, Name: "TDH.MEM.PAGE.AUG", Thread: 2})
	k.Emit(event.Event{Kind: event.KindMMU, Name: "cache_topup", Detail: "mmu_page_cache"})
	k.Idle(50)
	k.End()
	p := k.Phases()
	if len(p) != 1 || p[0].ModeledNS != 250 || p[0].Seamcalls != 3 || k.ByThread()["vcpu0"] != 200 || k.TopUps()["mmu_page_cache"] != 1 {
		t.Fatalf("phases %+v threads %v", p, k.ByThread())
	}
}
