package main

import (
	"os"
	"testing"

	"github.com/tdxsim/tdxsim/event"
)

// Progress is for terminals: on a pipe it is off, and run and fuzz write
// nothing to stderr.
func TestProgressNothingOnAPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if p := newProgress(w, "runs", 10); p.tty {
		t.Fatal("a pipe taken for a terminal")
	}
	var nilBar *progress
	nilBar.set(1, "x") // safe on nil
	nilBar.finish()
	file := writeScenario(t, small4K)
	if code, _, errs := run("run", file); code != 0 || errs != "" {
		t.Errorf("run: exit %d, stderr %q", code, errs)
	}
	if code, _, errs := run("fuzz", "--runs", "2", "--out", ""); code != 0 || errs != "" {
		t.Errorf("fuzz: exit %d, stderr %q", code, errs)
	}
}

// The run's meter counts SEAMCALLs and passes events and thread names on.
func TestSeamcallMeter(t *testing.T) {
	rec := &namedRecorder{}
	m := &seamcallMeter{next: rec}
	m.Emit(event.Event{Kind: event.KindSeamcall})
	m.Emit(event.Event{Kind: event.KindTdcall})
	m.Name(3, "td0/vcpu0")
	if m.n.Load() != 1 || rec.events != 2 || rec.names[3] != "td0/vcpu0" {
		t.Fatalf("meter %d, recorder %+v", m.n.Load(), rec)
	}
}

type namedRecorder struct {
	events int
	names  map[int32]string
}

func (r *namedRecorder) Emit(event.Event) { r.events++ }
func (r *namedRecorder) Name(id int32, n string) {
	if r.names == nil {
		r.names = map[int32]string{}
	}
	r.names[id] = n
}
