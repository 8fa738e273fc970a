package web_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tdxsim/tdxsim/scenario"
	"github.com/tdxsim/tdxsim/view"
	"github.com/tdxsim/tdxsim/web"
)

// bootConvert is a 64 MiB TD booted eager and two 16 KiB ranges
// converted to shared; more is timeline steps after those.
func bootConvert(t *testing.T, more string) *scenario.File {
	t.Helper()
	f, err := scenario.Parse("s.yaml", []byte("tds: [{memory: 64M, vcpus: 1}]\ntimeline:\n  - boot: {accept: eager}\n  - convert: {count: 2, size: 16K, back: false}\n"+more))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// serve starts an HTTP server for s; the test's cleanup closes it.
func serve(t *testing.T, s *web.Server) *httptest.Server {
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	r, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

// The JSON API without a browser: the run and its steps, a cell's pages
// and a GPA's S-EPT walk at a step (replayed), the report, the pages;
// bad queries get 400 and a reason, and /api/compare is 404 without a
// second run.
func TestAPI(t *testing.T) {
	srv := serve(t, web.New("s", bootConvert(t, ""), "", nil))

	code, body := get(t, srv, "/api/run")
	var run web.Run
	if code != 200 || json.Unmarshal([]byte(body), &run) != nil || len(run.Steps) != 3 {
		t.Fatalf("/api/run: %d, %d steps", code, len(run.Steps))
	}
	if m := run.Steps[1].Maps[0]; m.Counts[string(view.Private2M)] != 32 {
		t.Errorf("after an eager 2M boot: %v", m.Counts)
	}
	if run.Steps[2].Maps[0].Counts[string(view.Mixed)] == 0 {
		t.Errorf("after converting 16K ranges to shared, no mixed cell: %v", run.Steps[2].Maps[0].Counts)
	}
	code, body = get(t, srv, "/api/cell?step=1&td=td0&gpa=200000")
	var pages []view.Page
	if code != 200 || json.Unmarshal([]byte(body), &pages) != nil || len(pages) != 512 || pages[0].State != string(view.Private2M) {
		t.Errorf("/api/cell: %d %.200s", code, body)
	}
	code, body = get(t, srv, "/api/sept?step=1&td=td0&gpa=0")
	var walk []view.SEPTStep
	if code != 200 || json.Unmarshal([]byte(body), &walk) != nil || len(walk) != 3 || !walk[2].Leaf {
		t.Errorf("/api/sept: %d %s", code, body)
	}
	for path, want := range map[string]int{
		"/api/cell?step=9&td=td0&gpa=0": 400, "/api/cell?step=1&gpa=zz": 400, "/api/sept?step=1&td=nope&gpa=0": 404,
		"/api/run?run=c": 404, "/api/compare": 404, "/api/report.svg": 200, "/api/report.txt": 200,
		"/": 200, "/map": 200, "/timeline": 200, "/sept": 200, "/report": 200, "/compare": 200,
		"/static/app.js": 200, "/static/style.css": 200, "/etc/passwd": 404, "/static/../web.go": 404,
	} {
		if code, body := get(t, srv, path); code != want {
			t.Errorf("%s: %d, want %d (%.100s)", path, code, want, body)
		} else if code == 400 && strings.TrimSpace(body) == "" {
			t.Errorf("%s: 400 without a reason", path)
		}
	}
}

// After Prepare a query at an earlier step reads a parked runner: it
// answers the same as the lazy path and at once.
func TestPreparedQueries(t *testing.T) {
	f := bootConvert(t, "  - touch: {count: 8}\n")
	lazy := serve(t, web.New("s", f, "", nil))
	s := web.New("s", f, "", nil)
	s.Prepare()
	srv := serve(t, s)
	for _, q := range []string{"/api/cell?step=3&gpa=0", "/api/cell?step=1&gpa=0", "/api/sept?step=2&gpa=0", "/api/sept?step=0&gpa=200000"} {
		c1, b1 := get(t, lazy, q)
		start := time.Now()
		c2, b2 := get(t, srv, q)
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: %v after Prepare", q, d)
		}
		if c1 != http.StatusOK || c1 != c2 || b1 != b2 {
			t.Errorf("%s: lazy %d %.80s, prepared %d %.80s", q, c1, b1, c2, b2)
		}
	}
}
