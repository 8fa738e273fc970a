package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/tdxsim/tdxsim/event"
)

// progress shows live progress on a terminal for jobs that last more than
// a second, and nothing otherwise (a pipe, a file, CI logs): a count of
// work done in unit (SEAMCALLs, runs), its rate, the elapsed time, a
// status line, and an ETA when the total is known (total > 0). A job
// whose total is not known in advance gets no ETA rather than a wrong one.
//
// Use: p := newProgress(stderr, "runs", n); p.set(done, status) from the
// job's loop (or p.poll(f) to sample a counter the job updates from
// other goroutines); p.finish() before printing results. Every method is
// safe on a nil *progress and from any goroutine.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	start time.Time
	unit  string
	total int64
	bar   *progressbar.ProgressBar
	stop  chan struct{}
	done  chan struct{}
}

// showAfter is how long a job goes before its progress appears.
const showAfter = time.Second

// pollEvery is how often poll samples its counter.
const pollEvery = 200 * time.Millisecond

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newProgress(w io.Writer, unit string, total int64) *progress {
	return &progress{w: w, tty: isTerminal(w), start: time.Now(), unit: unit, total: total}
}

// set shows done units of work and a status (what is being done).
func (p *progress) set(done int64, status string) {
	if p == nil || !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil {
		if time.Since(p.start) < showAfter {
			return
		}
		total := p.total
		if total <= 0 {
			total = -1 // a spinner: count, rate and elapsed, no ETA
		}
		p.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(p.w),
			progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString(p.unit),
			progressbar.OptionClearOnFinish(), progressbar.OptionSetElapsedTime(true),
			progressbar.OptionSetPredictTime(p.total > 0), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth())
	}
	p.bar.Describe(status)
	p.bar.Set64(done)
}

// poll calls f every pollEvery and shows what it returns, until finish.
func (p *progress) poll(f func() (int64, string)) {
	if p == nil || !p.tty {
		return
	}
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.set(f())
			}
		}
	}()
}

// finish stops a poll and clears the progress from the terminal.
func (p *progress) finish() {
	if p == nil {
		return
	}
	if p.stop != nil {
		close(p.stop)
		<-p.done
		p.stop = nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Finish()
	}
}

// seamcallMeter is an event sink that counts host SEAMCALLs as they
// return, for a run's progress (safe on the parallel scheduler); it passes
// every event on to next and, for a trace recorder, thread names.
type seamcallMeter struct {
	n    atomic.Int64
	next event.Sink
}

func (m *seamcallMeter) Emit(e event.Event) {
	if e.Kind == event.KindSeamcall {
		m.n.Add(1)
	}
	if m.next != nil {
		m.next.Emit(e)
	}
}

// Name passes a thread's name on to next if it takes names (a trace
// recorder does).
func (m *seamcallMeter) Name(tid int32, name string) {
	if n, ok := m.next.(interface{ Name(int32, string) }); ok {
		n.Name(tid, name)
	}
}

// stepStatus is a run's status line: the step it is in, of how many.
func stepStatus(done, total int, at string) string {
	return fmt.Sprintf("step %d/%d %s", done, total, at)
}
