package main

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress shows a progress bar on a terminal for runs that last more
// than a second, and nothing otherwise (a pipe, a file, CI logs).
type progress struct {
	w     io.Writer
	tty   bool
	start time.Time
	bar   *progressbar.ProgressBar
}

// showAfter is how long a run goes before its progress bar appears.
const showAfter = time.Second

func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, tty: ok && term.IsTerminal(int(f.Fd())), start: time.Now()}
}

// update shows done of total steps.
func (p *progress) update(done, total int) {
	if !p.tty {
		return
	}
	if p.bar == nil {
		if time.Since(p.start) < showAfter {
			return
		}
		p.bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription("steps"),
			progressbar.OptionShowCount(), progressbar.OptionClearOnFinish(), progressbar.OptionSetElapsedTime(true))
	}
	p.bar.Set(done)
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
	}
}
