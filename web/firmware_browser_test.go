package web_test

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tdxsim/tdxsim/scenario"
	"github.com/tdxsim/tdxsim/tdvf/tdvftest"
	"github.com/tdxsim/tdxsim/web"
)

// A TD built from the synthetic TDVF image: the map outlines the cells
// holding its sections (the TD_HOB and TempMem in RAM, the BFV and CFV in
// the flash below 4 GiB), and the timeline's build step lists them.
func TestBrowserFirmware(t *testing.T) {
	ctx := headless(t, 60*time.Second)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "golden.fd"), tdvftest.Golden().Build(), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := scenario.Parse(filepath.Join(dir, "fw.yaml"), []byte("tds: [{name: fw, memory: 64M, firmware: golden.fd}]\ntimeline:\n  - boot: {accept: lazy, upfront: 16M}\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(web.New("fw", f, "", nil).Handler())
	defer srv.Close()
	open := func(path string) chromedp.Tasks {
		return chromedp.Tasks{chromedp.Navigate(srv.URL + path), chromedp.WaitVisible(`body[data-ready="1"]`, chromedp.ByQuery)}
	}

	var outlined []string
	var table string
	if err := chromedp.Run(ctx, open("/map"),
		chromedp.Evaluate(`Array.from(document.querySelectorAll("svg.map rect.cell.fw")).map(r => r.dataset.gpa)`, &outlined),
		chromedp.Text(`table.fw-sections`, &table, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	// TD_HOB and TempMem at 8 MiB and 9 MiB (one cell), BFV and CFV in the
	// last 64 KiB below 4 GiB.
	if strings.Join(outlined, " ") != "0x800000 0xffe00000" || !strings.Contains(table, "TD_HOB") || !strings.Contains(table, "MR.EXTEND") {
		t.Errorf("map: outlined cells %v, sections table %q", outlined, table)
	}

	var label, side string
	if err := chromedp.Run(ctx, open("/timeline"),
		chromedp.Text(`#step-label`, &label, chromedp.ByQuery),
		chromedp.Text(`.row table.fw-sections`, &side, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(label, "build") || !strings.Contains(side, "BFV") {
		t.Errorf("timeline at %q: sections %q", label, side)
	}
}
