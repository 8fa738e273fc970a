package web_test

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/tdxsim/tdxsim/scenario"
	"github.com/tdxsim/tdxsim/web"
)

// A small TD whose map changes from step to step: boot at 2M, convert
// pages to shared and back (splits), a hole punched, more touches.
const browserScenario = `
name: browser
tds: [{memory: 256M, vcpus: 2, image: [{gpa: 254M, size: 64K, measure: true}]}]
timeline:
  - boot: {accept: lazy, upfront: 32M}
  - touch: {pattern: sequential, count: 2000}
  - convert: {count: 8, size: 16K, back: false}
  - punch_hole: {gpa: 64M, size: 2M}
  - touch: {pattern: random, count: 3000}
`

// chromium finds the system's Chromium (CI installs Debian's package).
func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// headless starts a headless Chromium for the test (skipping it where
// there is none) and returns its context, cancelled at the end of the
// test or after timeout.
func headless(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	exe := chromium()
	if exe == "" {
		t.Skip("no Chromium on this machine (install Debian's chromium package; .ci/run does)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.Flag("headless", true), chromedp.WindowSize(1300, 1000))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelA)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, timeout)
	t.Cleanup(cancelT)
	return ctx
}

// TestBrowser opens every page against a running server in headless
// Chromium, clicks through the map and the timeline, checks that the map
// changes and that no console error or exception appears, and saves a
// screenshot of each page under the test's temporary directory.
func TestBrowser(t *testing.T) {
	ctx := headless(t, 90*time.Second)
	a, err := scenario.Parse("browser.yaml", []byte(browserScenario))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := scenario.Parse("browser.yaml", []byte(browserScenario))
	if err := b.SetPolicy("hugepages", "off"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(web.New("browser", a, "browser hugepages=off", b).Handler())
	defer srv.Close()

	var mu sync.Mutex
	var problems []string
	chromedp.ListenTarget(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				problems = append(problems, "console.error: "+strings.Join(parts, " "))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+e.ExceptionDetails.Error())
		}
	})

	dir := t.TempDir()
	if d := os.Getenv("TDXSIM_SCREENSHOTS"); d != "" {
		dir = d // keep them (the temporary directory goes with the test)
	}
	shot := func(name string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			var buf []byte
			if err := chromedp.FullScreenshot(&buf, 100).Do(ctx); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, name+".png"), buf, 0o644)
		})
	}
	open := func(path string) chromedp.Tasks {
		return chromedp.Tasks{chromedp.Navigate(srv.URL + path), chromedp.WaitVisible(`body[data-ready="1"]`, chromedp.ByQuery)}
	}
	run := func(what string, actions ...chromedp.Action) {
		t.Helper()
		if err := chromedp.Run(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// (a) the map: cells, then zoom into a cell mapped at 2M.
	var cells, pages int
	run("map", open("/map"),
		chromedp.Evaluate(`document.querySelectorAll("svg.map rect.cell").length`, &cells),
		chromedp.Click(`rect.cell[data-state="2"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#zoom`, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll("#zoom rect.page").length`, &pages),
		shot("map"))
	if cells != 128 || pages != 512 {
		t.Errorf("map: %d cells (want 128 for 256 MiB), zoom %d pages (want 512)", cells, pages)
	}

	// (b) the timeline: step through; the map and the counters change.
	const states = `Array.from(document.querySelectorAll("#timeline-map rect.cell")).map(r => r.dataset.state).join("")`
	var first, later, label0, label1, aug0, aug1 string
	run("timeline", open("/timeline"),
		chromedp.Evaluate(states, &first),
		chromedp.Text(`#step-label`, &label0, chromedp.ByQuery),
		chromedp.Text(`#calls`, &aug0, chromedp.ByQuery),
		chromedp.Click(`#next`, chromedp.ByQuery),
		chromedp.Click(`#next`, chromedp.ByQuery),
		chromedp.Click(`#next`, chromedp.ByQuery),
		chromedp.Evaluate(states, &later),
		chromedp.Text(`#step-label`, &label1, chromedp.ByQuery),
		chromedp.Text(`#calls`, &aug1, chromedp.ByQuery),
		shot("timeline"))
	if first == "" || first == later || label0 == label1 || aug0 == aug1 {
		t.Errorf("timeline did not change: %q -> %q, map %d -> %d cells differ", label0, label1, len(first), diff(first, later))
	}

	// (c) the S-EPT walk of GPA 0: root to leaf.
	var levels int
	var leaf string
	run("sept", open("/sept?gpa=0"),
		chromedp.WaitVisible(`.sept-level.leaf`, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll(".sept-level").length`, &levels),
		chromedp.Text(`.sept-level.leaf`, &leaf, chromedp.ByQuery),
		shot("sept"))
	if levels < 3 || !strings.Contains(leaf, "MAPPED") {
		t.Errorf("S-EPT walk: %d levels, leaf %q", levels, leaf)
	}

	// (d) the report and its charts.
	var imgWidth int
	var text string
	run("report", open("/report"),
		chromedp.Poll(`document.getElementById("report-img").naturalWidth > 0`, nil, chromedp.WithPollingTimeout(20*time.Second)),
		chromedp.Evaluate(`document.getElementById("report-img").naturalWidth`, &imgWidth),
		chromedp.Text(`#report-text`, &text, chromedp.ByQuery),
		shot("report"))
	if imgWidth == 0 || !strings.Contains(text, "TDH.MEM.PAGE.AUG") {
		t.Errorf("report: image width %d, text has no SEAMCALL table", imgWidth)
	}

	// (e) the comparison: differing rows marked, two maps.
	var diffs, maps int
	run("compare", open("/compare"),
		chromedp.Evaluate(`document.querySelectorAll("#compare-table tr.diff").length`, &diffs),
		chromedp.Evaluate(`document.querySelectorAll("#compare-maps svg.map").length`, &maps),
		shot("compare"))
	if diffs == 0 || maps != 2 {
		t.Errorf("compare: %d differing rows, %d maps", diffs, maps)
	}

	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("browser: %s", p)
	}
	t.Logf("screenshots in %s", dir)
}

func diff(a, b string) int {
	n := 0
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}
