package main

import (
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/tdxsim/tdxsim/scenario"
	"github.com/tdxsim/tdxsim/trace"
)

// traceFlags are --trace FILE, --trace-format and --trace-window, shared
// by run and replay.
type traceFlags struct{ file, format, window *string }

func addTraceFlags(fs *flag.FlagSet) traceFlags {
	return traceFlags{
		file: fs.String("trace", "", "write a trace of the run to FILE: a track per vCPU and thread with SEAMCALLs, faults, lock holds and waits, splits;\n"+
			"FILE ending in .gz is written gzip-compressed (Perfetto opens .json.gz)"),
		format: fs.String("trace-format", "chrome", "trace format: chrome (trace-event JSON for ui.perfetto.dev and chrome://tracing) or ftrace (trace-cmd report lines)"),
		window: fs.String("trace-window", "", "trace only steps STEP..STEP (timeline indexes as the report's phases number them; build and teardown by name;\n"+
			"e.g. 2..3, build..0, 4..teardown, 2); the times are still those of the whole run"),
	}
}

// check refuses an unknown format, a malformed window and a --trace FILE
// that cannot be written (bad input, before anything runs).
func (tf traceFlags) check() error {
	if *tf.format != "chrome" && *tf.format != "ftrace" {
		return fmt.Errorf("--trace-format %q: want chrome or ftrace", *tf.format)
	}
	if *tf.window != "" && *tf.file == "" {
		return fmt.Errorf("--trace-window goes with --trace FILE")
	}
	if _, _, err := parseWindow(*tf.window, -1); err != nil {
		return err
	}
	return checkOutFile("trace", *tf.file)
}

// parseWindow parses STEP..STEP (or one STEP); steps are timeline
// indexes, "build" (trace.BuildStep) or "teardown" (the timeline's
// length). With steps >= 0 it also checks the range against a timeline
// of that many steps.
func parseWindow(s string, steps int) (from, to int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	a, b, isRange := strings.Cut(s, "..")
	if !isRange {
		b = a
	}
	bad := func(why string) error {
		return fmt.Errorf("--trace-window %q: %s", s, why)
	}
	step := func(x string) (int, error) {
		switch x {
		case "build":
			return trace.BuildStep, nil
		case "teardown":
			if steps < 0 {
				return 1 << 30, nil
			}
			return steps, nil
		}
		n, err := strconv.Atoi(x)
		if err != nil || n < 0 {
			return 0, bad(fmt.Sprintf("%q: want a timeline index (0, 1, ...), build or teardown", x))
		}
		if steps >= 0 && n >= steps {
			return 0, bad(fmt.Sprintf("step %d: the timeline has %d steps (0..%d)", n, steps, steps-1))
		}
		return n, nil
	}
	if from, err = step(a); err != nil {
		return 0, 0, err
	}
	if to, err = step(b); err != nil {
		return 0, 0, err
	}
	if from > to {
		return 0, 0, bad("the first step comes after the last")
	}
	return from, to, nil
}

// options adds a recorder to o when a trace was asked for, limited to the
// window if one was given.
func (tf traceFlags) options(f *scenario.File, o *scenario.Options) (*trace.Recorder, error) {
	if *tf.file == "" {
		return nil, nil
	}
	rec := newRecorder(f)
	if *tf.window != "" {
		from, to, err := parseWindow(*tf.window, len(f.Timeline))
		if err != nil {
			return nil, err
		}
		rec.SetWindow(from, to)
	}
	o.Sink, o.TraceLocks = rec, true
	return rec, nil
}

func newRecorder(f *scenario.File) *trace.Recorder {
	return trace.New(f.Costs().Of)
}

// write writes rec to the trace file.
func (tf traceFlags) write(rec *trace.Recorder) error {
	if rec == nil {
		return nil
	}
	return writeTrace(rec, *tf.file, *tf.format)
}

// writeTrace writes rec to path in format, gzip-compressed when path ends
// in .gz.
func writeTrace(rec *trace.Recorder, path, format string) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	var w io.Writer = out
	var zw *gzip.Writer
	if strings.HasSuffix(path, ".gz") {
		zw = gzip.NewWriter(out)
		w = zw
	}
	if format == "ftrace" {
		err = rec.WriteFtrace(w)
	} else {
		err = rec.WriteChrome(w)
	}
	if zw != nil {
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// traceReproducer replays a fuzz reproducer with a recorder and writes its
// Chrome trace beside it (NAME.trace.json); it returns the trace's path.
func traceReproducer(path string) (string, error) {
	f, err := scenario.Load(path)
	if err != nil {
		return "", err
	}
	rec := newRecorder(f)
	drive(f, scenario.Options{Sink: rec, TraceLocks: true}, nil, nil, nil) // a reproducer fails by design
	out := strings.TrimSuffix(path, ".yaml") + ".trace.json"
	return out, writeTrace(rec, out, "chrome")
}
