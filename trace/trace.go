// Package trace records a run's events and writes them as a Chrome
// trace-event JSON file (it opens in ui.perfetto.dev and chrome://tracing)
// or as lines shaped like the kernel's ftrace output (trace-cmd report),
// with a track per simulated thread: vCPUs, the VMM, host-event threads.
//
// Time is the model's: the run is laid out on one clock that advances by
// each SEAMCALL's and TDCALL's modeled cost (report's cost table) and by a
// little for every scheduler step, so a SEAMCALL is a slice as long as it
// would take on hardware, and a lock wait lasts while other threads run.
// Under the deterministic scheduler one thread runs at a time, so this
// serialized clock is the run as it happened.
package trace

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
)

// StepNS is the modeled time of one scheduler step outside SEAMCALLs.
const StepNS = 20

// Recorder is an event.Sink that keeps what a trace shows.
type Recorder struct {
	cost func(event.Event) uint64

	mu      sync.Mutex
	names   map[int32]string
	recs    []rec
	costSum uint64
	last    uint64
	// window is the range of steps kept (SetWindow); paused is set
	// while a step outside it runs.
	window    [2]int
	hasWindow bool
	paused    bool
}

// Step positions for SetWindow and BeforeStep: the build comes before
// timeline step 0, the teardown after the last (its index is the
// timeline's length).
const BuildStep = -1

// SetWindow keeps only the events of steps from to to (inclusive;
// BuildStep for the build, the timeline's length for the teardown). The
// clock still runs through the other steps, so a windowed trace's times
// are those of the whole run.
func (r *Recorder) SetWindow(from, to int) {
	r.mu.Lock()
	r.window, r.hasWindow = [2]int{from, to}, true
	r.paused = BuildStep < from || BuildStep > to
	r.mu.Unlock()
}

// BeforeStep is told the step about to run (the caller that drives the
// run calls it at each step boundary).
func (r *Recorder) BeforeStep(step int) {
	r.mu.Lock()
	r.paused = r.hasWindow && (step < r.window[0] || step > r.window[1])
	r.mu.Unlock()
}

type rec struct {
	ts, dur uint64 // ns
	e       event.Event
}

// New returns a recorder; cost gives a SEAMCALL's or TDCALL's modeled
// nanoseconds (report.CostTable.Of).
func New(cost func(event.Event) uint64) *Recorder {
	return &Recorder{cost: cost, names: map[int32]string{}}
}

// Name names a simulated thread's track.
func (r *Recorder) Name(id int32, name string) {
	r.mu.Lock()
	r.names[id] = name
	r.mu.Unlock()
}

// Emit records e if a trace shows it.
func (r *Recorder) Emit(e event.Event) {
	switch e.Kind {
	case event.KindAlloc, event.KindFree:
		return // too many, and the SEAMCALLs and MMU events tell the story
	case event.KindMMU:
		if e.Name == "cache_topup" {
			return
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var dur uint64
	if e.Kind == event.KindSeamcall || e.Kind == event.KindTdcall {
		dur = r.cost(e)
		r.costSum += dur
	}
	end := max(r.costSum+e.Step*StepNS, r.last)
	r.last = end
	if !r.paused {
		r.recs = append(r.recs, rec{ts: end - dur, dur: dur, e: e})
	}
}

// tracks maps each thread to its track: threads with the same name (a
// vCPU's thread in every step, "td0/vcpu0") share the track of the first
// of them, so a trace has one track per vCPU for the whole run. Unnamed
// threads keep their own.
func (r *Recorder) tracks() map[int32]int32 {
	ids := map[int32]bool{}
	for _, x := range r.recs {
		ids[x.e.Thread] = true
	}
	first := map[string]int32{}
	out := map[int32]int32{}
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		name, ok := r.names[id]
		if !ok {
			out[id] = id
			continue
		}
		if f, seen := first[name]; seen {
			out[id] = f
		} else {
			first[name] = id
			out[id] = id
		}
	}
	return out
}

func (r *Recorder) name(id int32) string {
	if n, ok := r.names[id]; ok {
		return n
	}
	if id < 0 {
		return "host"
	}
	return fmt.Sprintf("thread%d", id)
}

// chromeEvent is one trace-event record
// (https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU).
type chromeEvent struct {
	Name string         `json:"name"`
	Cat  string         `json:"cat,omitempty"`
	Ph   string         `json:"ph"`
	TS   float64        `json:"ts"` // microseconds
	Dur  *float64       `json:"dur,omitempty"`
	PID  int            `json:"pid"`
	TID  int32          `json:"tid"`
	S    string         `json:"s,omitempty"` // instant scope
	Args map[string]any `json:"args,omitempty"`
}

func us(ns uint64) float64 { return float64(ns) / 1000 }

// WriteChrome writes the trace as Chrome trace-event JSON: SEAMCALLs and
// TDCALLs as slices of their modeled length, lock holds and waits as
// slices (holds need sched's TraceLocks), EPT violations, MMU changes,
// splits, guest_memfd and KVM operations as instants, and violations and
// deadlocks as global instants.
func (r *Recorder) WriteChrome(w io.Writer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	bw.WriteString(`{"displayTimeUnit":"ns","traceEvents":[` + "\n")
	first := true
	put := func(ce chromeEvent) {
		if !first {
			bw.WriteString(",")
		}
		first = false
		enc.Encode(ce) // Encode ends the record with a newline
	}
	put(chromeEvent{Name: "process_name", Ph: "M", PID: 1, Args: map[string]any{"name": "tdxsim"}})
	track := r.tracks()
	for _, id := range slices.Sorted(maps.Keys(track)) {
		if track[id] == id {
			put(chromeEvent{Name: "thread_name", Ph: "M", PID: 1, TID: id, Args: map[string]any{"name": r.name(id)}})
		}
	}
	type open struct {
		ts   uint64
		mode string
	}
	holds := map[string][]open{} // thread/class -> stack of holds
	waits := map[string]uint64{}
	key := func(e event.Event) string { return fmt.Sprint(e.Thread, "/", e.Name) }
	slice := func(name, cat string, ts, dur uint64, tid int32, args map[string]any) {
		d := us(dur)
		put(chromeEvent{Name: name, Cat: cat, Ph: "X", TS: us(ts), Dur: &d, PID: 1, TID: track[tid], Args: args})
	}
	for _, x := range r.recs {
		e := x.e
		switch e.Kind {
		case event.KindSeamcall, event.KindTdcall:
			args := map[string]any{}
			for i, reg := range [...]string{"rcx", "rdx", "r8", "r9"} {
				if e.Args[i] != 0 {
					args[reg] = hex(e.Args[i])
				}
			}
			if e.Status != 0 {
				args["status"] = hex(e.Status)
			}
			if e.Detail != "" {
				args["detail"] = e.Detail
			}
			slice(e.Name, e.Kind.String(), x.ts, x.dur, e.Thread, args)
		case event.KindLockWait:
			waits[key(e)] = x.ts
		case event.KindLockAcquire:
			k := key(e)
			if ts, ok := waits[k]; ok {
				delete(waits, k)
				slice("wait "+e.Name, "lock", ts, x.ts-ts, e.Thread, map[string]any{"mode": e.Detail})
			}
			holds[k] = append(holds[k], open{x.ts, e.Detail})
		case event.KindLockRelease:
			k := key(e)
			if st := holds[k]; len(st) > 0 {
				o := st[len(st)-1]
				holds[k] = st[:len(st)-1]
				slice(e.Name, "lock", o.ts, x.ts-o.ts, e.Thread, map[string]any{"mode": o.mode})
			}
		case event.KindViolation, event.KindDeadlock:
			put(chromeEvent{Name: e.Name, Cat: e.Kind.String(), Ph: "i", S: "g", TS: us(x.ts), PID: 1, TID: track[e.Thread],
				Args: map[string]any{"detail": e.Detail}})
		default:
			args := map[string]any{}
			if e.Detail != "" {
				args["detail"] = e.Detail
			}
			if e.Kind == event.KindMMU {
				args["gfn"], args["level"], args["pfn"] = hex(e.Args[0]), addr.Level(e.Args[1]).String(), hex(e.Args[2])
				args["root"] = map[uint64]string{0: "direct", 1: "mirror"}[e.Args[3]]
			} else {
				args["a0"], args["a1"] = hex(e.Args[0]), hex(e.Args[1])
			}
			put(chromeEvent{Name: e.Name, Cat: e.Kind.String(), Ph: "i", S: "t", TS: us(x.ts), PID: 1, TID: track[e.Thread], Args: args})
		}
	}
	bw.WriteString("]}\n")
	return bw.Flush()
}

func hex(v uint64) string { return fmt.Sprintf("%#x", v) }

// WriteFtrace writes the trace as trace-cmd report lines: "comm-tid [cpu]
// seconds: event: fields", with the kernel's own tracepoint names and
// field layouts where one exists (kvm_page_fault,
// kvm_tdp_mmu_spte_changed, kvm_mmu_split_huge_page) and tdx_seamcall,
// tdx_tdcall, lock and guest_memfd lines in the same shape for what the
// kernel has no tracepoint for.
func (r *Recorder) WriteFtrace(w io.Writer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "# tracer: nop\n#\n#           TASK-PID     CPU#     TIMESTAMP  FUNCTION\n#              | |         |         |         |\n")
	track := r.tracks()
	for _, x := range r.recs {
		e := x.e
		var name, fields string
		switch e.Kind {
		case event.KindSeamcall:
			name = "tdx_seamcall"
			fields = fmt.Sprintf("leaf %s rcx 0x%x rdx 0x%x r8 0x%x r9 0x%x status 0x%x", e.Name, e.Args[0], e.Args[1], e.Args[2], e.Args[3], e.Status)
		case event.KindTdcall:
			name = "tdx_tdcall"
			fields = fmt.Sprintf("leaf %s rcx 0x%x rdx 0x%x status 0x%x", e.Name, e.Args[0], e.Args[1], e.Status)
		case event.KindTDX:
			if e.Name == "ept_violation" {
				name = "kvm_page_fault"
				fields = fmt.Sprintf("vcpu %d rip 0x0 address 0x%016x error_code 0x%x", e.Thread, e.Args[0], e.Args[1])
			} else {
				name = "kvm_tdx_" + e.Name
				fields = fmt.Sprintf("a0 0x%x a1 0x%x %s", e.Args[0], e.Args[1], e.Detail)
			}
		case event.KindMMU:
			switch e.Name {
			case "split":
				name = "kvm_mmu_split_huge_page"
				fields = fmt.Sprintf("gfn %x spte %x level %d errno 0", e.Args[0], e.Args[2]<<12, e.Args[1]+1)
			default:
				name = "kvm_tdp_mmu_spte_changed"
				old, new := uint64(0), e.Args[2]<<12
				if e.Name == "zap" || e.Name == "free_pt" {
					old, new = new, 0
				}
				fields = fmt.Sprintf("as id %d gfn %x level %d old_spte %x new_spte %x (%s %s)", 0, e.Args[0], e.Args[1]+1, old, new,
					map[uint64]string{0: "direct", 1: "mirror"}[e.Args[3]], e.Name)
			}
		case event.KindLockWait, event.KindLockAcquire, event.KindLockRelease:
			name = "lock_" + strings.TrimPrefix(e.Kind.String(), "lock_")
			fields = fmt.Sprintf("%s %s", e.Name, e.Detail)
		case event.KindGmem:
			name = "kvm_gmem_" + e.Name
			fields = fmt.Sprintf("ino %d offset 0x%x len 0x%x errno %d", e.Args[2], e.Args[0], e.Args[1], e.Status)
		case event.KindKVM:
			name = e.Name
			if !strings.HasPrefix(strings.ToLower(name), "kvm") {
				name = "kvm_" + name
			}
			fields = fmt.Sprintf("vm %d 0x%x 0x%x %s", e.Args[2], e.Args[0], e.Args[1], e.Detail)
		default:
			name = e.Kind.String()
			fields = strings.TrimSpace(e.Name + " " + e.Detail)
		}
		name = tracepoint(name)
		comm := strings.ReplaceAll(r.name(e.Thread), " ", "_")
		tid := track[e.Thread]
		fmt.Fprintf(bw, "%16s-%-5d [%03d] %6d.%06d: %s: %s\n", comm, tid, max(tid, 0)%1000, x.ts/1e9, x.ts%1e9/1000, name, fields)
	}
	return bw.Flush()
}

// tracepoint makes name a tracepoint-like identifier: lower case, letters,
// digits and underscores ("kvm_KVM_CREATE_VM" -> "kvm_kvm_create_vm").
func tracepoint(name string) string {
	return strings.Trim(strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '_'
	}, name), "_")
}
