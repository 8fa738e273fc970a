// Package web is `tdxsim serve`: a web UI, served from assets embedded in
// the binary, over one scenario run (and a second run to compare it
// with). Pages: the GPA map of each TD (2 MiB cells by state, hover
// details, zoom into a cell's 512 pages), a timeline scrubber over the
// steps (map, counters and the last SEAMCALLs at each), the Secure EPT
// walk of a GPA, the run's report with its charts, and the two runs side
// by side. It reads only the scenario files it was given.
package web

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/picture"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/scenario"
	"github.com/tdxsim/tdxsim/view"
)

//go:embed static
var static embed.FS

// Step is the state at one step boundary, as the timeline shows it.
type Step struct {
	At         string            `json:"at"`
	Maps       []view.Map        `json:"maps"`
	Calls      map[string]uint64 `json:"calls"`
	Violations int               `json:"violations"`
	// Last is the last SEAMCALLs made before this boundary, newest last.
	Last []Call `json:"last_seamcalls"`
}

// Call is one SEAMCALL as the timeline lists it.
type Call struct {
	Thread int32  `json:"thread"`
	Leaf   string `json:"leaf"`
	RCX    string `json:"rcx"`
	RDX    string `json:"rdx"`
	Status string `json:"status"`
}

// Run is one scenario run with its steps.
type Run struct {
	Name   string      `json:"name"`
	Report *report.Run `json:"report"`
	Error  string      `json:"error,omitempty"`
	Steps  []Step      `json:"steps"`
	file   *scenario.File

	mu     sync.Mutex               // guards parked
	parked map[int]*scenario.Runner // runners parked at a step, by index into Steps
	query  sync.Mutex               // serializes reads of parked runners' state
}

// lastCalls keeps the most recent SEAMCALLs (a ring).
type lastCalls struct {
	mu   sync.Mutex
	ring [20]Call
	n    int
}

func (l *lastCalls) Emit(e event.Event) {
	if e.Kind != event.KindSeamcall {
		return
	}
	l.mu.Lock()
	l.ring[l.n%len(l.ring)] = Call{Thread: e.Thread, Leaf: e.Name, RCX: fmt.Sprintf("%#x", e.Args[0]),
		RDX: fmt.Sprintf("%#x", e.Args[1]), Status: fmt.Sprintf("%#x", e.Status)}
	l.n++
	l.mu.Unlock()
}

func (l *lastCalls) snapshot() []Call {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []Call{}
	for i := max(0, l.n-len(l.ring)); i < l.n; i++ {
		out = append(out, l.ring[i%len(l.ring)])
	}
	return out
}

// Execute runs f on the deterministic scheduler, recording every step
// boundary. A run that stops early or breaks a check is still a Run: the
// UI shows how far it got.
func Execute(name string, f *scenario.File) *Run {
	run := &Run{Name: name, file: f, Steps: []Step{}, parked: map[int]*scenario.Runner{}}
	calls := &lastCalls{}
	r, err := scenario.Start(f, scenario.Options{Sink: calls})
	if err != nil {
		run.Error = err.Error()
		return run
	}
	record := func() {
		if sv := r.View(); sv.Err == nil {
			run.Steps = append(run.Steps, Step{At: sv.At, Maps: view.Snapshot(sv.World), Calls: sv.Calls,
				Violations: sv.Violations, Last: calls.snapshot()})
		}
	}
	record()
	for r.More() {
		r.Next()
		record()
	}
	run.Report, err = r.Report()
	if err != nil {
		run.Error = err.Error()
	}
	return run
}

// maxParked bounds the runners a Run keeps parked for queries (each
// holds a whole model); steps past it are answered by replaying.
const maxParked = 32

// runnerAt returns a runner parked at step k (a boundary of Steps), the
// one kept from before or a new one run there from the start (the run is
// deterministic: the same state as the first time), and keeps it.
func (run *Run) runnerAt(k int) *scenario.Runner {
	run.mu.Lock()
	r, ok := run.parked[k]
	run.mu.Unlock()
	if ok {
		return r
	}
	r, err := scenario.Start(run.file, scenario.Options{})
	if err != nil {
		return nil
	}
	for range k {
		r.Next()
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	if old, ok := run.parked[k]; ok {
		r.Report() // another query parked one here first: let this one finish
		return old
	}
	if len(run.parked) < maxParked {
		run.parked[k] = r
	}
	return r
}

// Prepare parks a runner at every step (up to maxParked), so that a
// query at any of them is answered without running the model.
func (run *Run) Prepare() {
	for k := range min(len(run.Steps), maxParked) {
		run.runnerAt(k)
	}
}

// at calls fn with the state at step k.
func (run *Run) at(k int, fn func(check.World)) bool {
	r := run.runnerAt(k)
	if r == nil {
		return false
	}
	run.query.Lock() // a parked runner's state is read by one query at a time
	defer run.query.Unlock()
	fn(r.View().World)
	return true
}

// Server serves the UI over run A and, when given, run B.
type Server struct {
	A, B *Run
	// Comparison is A against B (nil without B).
	Comparison *report.Comparison

	mu    sync.Mutex // guards cache
	cache map[string][]byte
}

// New runs a (and b, when not nil) and returns the server for them.
func New(nameA string, a *scenario.File, nameB string, b *scenario.File) *Server {
	s := &Server{A: Execute(nameA, a), cache: map[string][]byte{}}
	if b != nil {
		s.B = Execute(nameB, b)
		if s.A.Report != nil && s.B.Report != nil {
			s.Comparison = report.Compare(nameA, s.A.Report, nameB, s.B.Report)
		}
	}
	return s
}

// Prepare parks a runner at every step of each run (see Run.Prepare):
// afterwards a cell or S-EPT query at any step only reads.
func (s *Server) Prepare() {
	s.A.Prepare()
	if s.B != nil {
		s.B.Prepare()
	}
}

// Handler returns the HTTP handler: pages, static assets and the JSON API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	sub, _ := fs.Sub(static, "static")
	files := http.FileServer(http.FS(sub))
	mux.Handle("GET /static/", http.StripPrefix("/static/", files))
	page := func(w http.ResponseWriter, r *http.Request) {
		b, _ := static.ReadFile("static/index.html")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(b)
	}
	for _, p := range []string{"GET /{$}", "GET /map", "GET /timeline", "GET /sept", "GET /report", "GET /compare"} {
		mux.HandleFunc(p, page)
	}
	mux.HandleFunc("GET /api/legend", func(w http.ResponseWriter, r *http.Request) {
		type entry struct{ Code, Name, Colour string }
		var out []entry
		for _, l := range view.Legend {
			out = append(out, entry{string(l.State), l.Name, picture.Colours[l.State]})
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /api/run", func(w http.ResponseWriter, r *http.Request) {
		run, ok := s.run(r.URL.Query().Get("run"))
		if !ok {
			http.Error(w, "no such run (a or b; b only with a second file or --policy)", http.StatusNotFound)
			return
		}
		writeJSON(w, run)
	})
	mux.HandleFunc("GET /api/compare", func(w http.ResponseWriter, r *http.Request) {
		if s.Comparison == nil {
			http.Error(w, "no second run: start serve with a second FILE or --policy k=v", http.StatusNotFound)
			return
		}
		writeJSON(w, s.Comparison)
	})
	mux.HandleFunc("GET /api/report.svg", func(w http.ResponseWriter, r *http.Request) {
		run, ok := s.run(r.URL.Query().Get("run"))
		if !ok || run.Report == nil || len(run.Steps) == 0 {
			http.Error(w, "no report", http.StatusNotFound)
			return
		}
		var b bytes.Buffer
		picture.Write(&b, run.Report, lastMaps(run))
		w.Header().Set("Content-Type", "image/svg+xml")
		w.Write(b.Bytes())
	})
	mux.HandleFunc("GET /api/report.txt", func(w http.ResponseWriter, r *http.Request) {
		run, ok := s.run(r.URL.Query().Get("run"))
		if !ok || run.Report == nil {
			http.Error(w, "no report", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		run.Report.WriteText(w)
	})
	mux.HandleFunc("GET /api/cell", s.query("cell", func(w check.World, td check.TD, gpa uint64) any {
		return view.CellPages(w.Host.Mod, td, gpa)
	}))
	mux.HandleFunc("GET /api/sept", s.query("sept", func(w check.World, td check.TD, gpa uint64) any {
		return view.SEPTPath(w.Host.Mod, td, gpa)
	}))
	return mux
}

func (s *Server) run(name string) (*Run, bool) {
	switch name {
	case "", "a":
		return s.A, true
	case "b":
		return s.B, s.B != nil
	}
	return nil, false
}

// lastMaps is each TD's map at its last step before teardown.
func lastMaps(run *Run) []view.Map {
	var out []view.Map
	for _, st := range run.Steps {
		out = view.Latest(out, st.Maps)
	}
	return out
}

// query answers /api/cell and /api/sept: ?run=a|b&step=K&td=NAME&gpa=X,
// from a runner parked at step K.
func (s *Server) query(kind string, fn func(check.World, check.TD, uint64) any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		run, ok := s.run(q.Get("run"))
		step, err1 := strconv.Atoi(q.Get("step"))
		gpa, err2 := strconv.ParseUint(strings.TrimPrefix(q.Get("gpa"), "0x"), 16, 64)
		switch {
		case !ok:
			http.Error(w, "run: want a or b", http.StatusBadRequest)
			return
		case err1 != nil || step < 0 || step >= len(run.Steps):
			http.Error(w, fmt.Sprintf("step: want 0 to %d", len(run.Steps)-1), http.StatusBadRequest)
			return
		case err2 != nil:
			http.Error(w, "gpa: want a hex address", http.StatusBadRequest)
			return
		}
		key := fmt.Sprintf("%s/%s/%d/%s/%#x", kind, q.Get("run"), step, q.Get("td"), gpa)
		s.mu.Lock()
		defer s.mu.Unlock()
		if b, ok := s.cache[key]; ok {
			w.Header().Set("Content-Type", "application/json")
			w.Write(b)
			return
		}
		var out any
		found := false
		run.at(step, func(wld check.World) {
			for _, td := range wld.TDs {
				if td.Name == q.Get("td") || q.Get("td") == "" {
					out, found = fn(wld, td, gpa), true
					return
				}
			}
		})
		if !found {
			http.Error(w, "no such TD at that step", http.StatusNotFound)
			return
		}
		b, _ := json.Marshal(out)
		s.cache[key] = b
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
