package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// parse parses flags given anywhere among the arguments (tdxsim run
// FILE --json as well as tdxsim run --json FILE); it returns an exit code
// to stop with, or -1 to go on. "--" ends the flags: everything after it
// is an argument, even when it starts with "-". A lone "-" is an argument
// (standard input).
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) int {
	fs.SetOutput(stderr)
	if err := fs.Parse(flagsFirst(fs, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeExamples(fs.Output(), strings.TrimPrefix(fs.Name(), "tdxsim "))
			return exitOK
		}
		return exitBadInput
	}
	return -1
}

// flagsFirst reorders args so that every flag (with its value, for a flag
// that takes one) comes before every positional argument, which keep their
// order after a "--". Go's flag package stops at the first non-flag; this
// lets a command take its flags anywhere, in one place for every command.
func flagsFirst(fs *flag.FlagSet, args []string) []string {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if strings.Contains(name, "=") {
			continue // -name=value
		}
		if takesValue(fs, name) && i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return append(append(flags, "--"), rest...)
}

// takesValue says whether flag name is defined and wants a value (is not
// a boolean flag). An unknown flag takes none: Parse then reports it.
func takesValue(fs *flag.FlagSet, name string) bool {
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

// setUsage makes fs's usage text, then its flags: what every command's
// --help and a bad flag print.
func setUsage(fs *flag.FlagSet, stderr io.Writer, text string) {
	fs.Usage = func() {
		io.WriteString(stderr, text+"\n\nflags:\n")
		fs.PrintDefaults()
	}
}

// parseArgs is parse, then the rule on the number of positional
// arguments: at least min and at most max (max < 0: no limit). A count
// outside it prints "tdxsim CMD: rule" and stops with exit 2. It returns
// an exit code to stop with, or -1 to go on.
func parseArgs(fs *flag.FlagSet, args []string, stderr io.Writer, min, max int, rule string) int {
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	if n := fs.NArg(); n < min || max >= 0 && n > max {
		fmt.Fprintf(stderr, "%s: %s\n", fs.Name(), rule)
		return exitBadInput
	}
	return -1
}
