package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/vmm"
)

func TestNewLifecycleCollectsViolations(t *testing.T) {
	c := event.NewCounter()
	c.Emit(event.Event{Kind: event.KindSeamcall, Name: "TDH.MEM.PAGE.AUG"})
	c.Emit(event.Event{Kind: event.KindSeamcall, Name: "TDH.MEM.PAGE.AUG", Status: 0x8000020000000001})
	c.Emit(event.Event{Kind: event.KindTdcall, Name: "TDG.MEM.PAGE.ACCEPT"})
	c.Emit(event.Event{Kind: event.KindViolation, Name: "hostmem.double-free", Detail: "pfn 0x10"})

	clean := NewLifecycle(1, event.NewCounter(), vmm.LifecycleResult{})
	if len(clean.Violations) != 0 {
		t.Fatalf("clean run has violations %v", clean.Violations)
	}
	r := NewLifecycle(1, c, vmm.LifecycleResult{LeakedPages: 3, ChargedAfter: hostmem.Usage{Charged: 2}})
	if r.Seamcalls["TDH.MEM.PAGE.AUG"] != 2 || r.Failed["TDH.MEM.PAGE.AUG"] != 1 || r.Tdcalls["TDG.MEM.PAGE.ACCEPT"] != 1 {
		t.Fatalf("counts %+v %+v %+v", r.Seamcalls, r.Failed, r.Tdcalls)
	}
	if len(r.Violations) != 2 || !strings.HasPrefix(r.Violations[0], "hostmem.double-free") ||
		!strings.Contains(r.Violations[1], "3 pages leaked, 2 still charged") {
		t.Fatalf("violations %v", r.Violations)
	}
	var buf bytes.Buffer
	if err := clean.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil || m["violations"] == nil {
		t.Fatalf("JSON %s: violations must be [] not null", buf.String())
	}
}
