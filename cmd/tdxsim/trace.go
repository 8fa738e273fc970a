package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/tdxsim/tdxsim/scenario"
	"github.com/tdxsim/tdxsim/trace"
)

// traceFlags are --trace FILE and --trace-format, shared by run and replay.
type traceFlags struct{ file, format *string }

func addTraceFlags(fs *flag.FlagSet) traceFlags {
	return traceFlags{
		file:   fs.String("trace", "", "write a trace of the run to FILE: a track per vCPU and thread with SEAMCALLs, faults, lock holds and waits, splits"),
		format: fs.String("trace-format", "chrome", "trace format: chrome (trace-event JSON for ui.perfetto.dev and chrome://tracing) or ftrace (trace-cmd report lines)"),
	}
}

// check refuses an unknown format and a --trace FILE that cannot be
// written (bad input, before anything runs).
func (tf traceFlags) check() error {
	if *tf.format != "chrome" && *tf.format != "ftrace" {
		return fmt.Errorf("--trace-format %q: want chrome or ftrace", *tf.format)
	}
	return checkOutFile("trace", *tf.file)
}

// options adds a recorder to o when a trace was asked for.
func (tf traceFlags) options(f *scenario.File, o *scenario.Options) *trace.Recorder {
	if *tf.file == "" {
		return nil
	}
	rec := newRecorder(f)
	o.Sink, o.TraceLocks = rec, true
	return rec
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

func writeTrace(rec *trace.Recorder, path, format string) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if format == "ftrace" {
		err = rec.WriteFtrace(out)
	} else {
		err = rec.WriteChrome(out)
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
