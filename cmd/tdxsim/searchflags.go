package main

import (
	"flag"
	"time"
)

// searchFlags are the flags of the commands that search for violations
// (fuzz, explore): a time budget, where reproducers go, JSON output and
// policy overrides.
type searchFlags struct {
	duration *time.Duration
	out      *string
	asJSON   *bool
	policies policyFlag
}

// addSearchFlags registers them on fs; reproducers go to defaultOut,
// described by outHelp, and policyHelp says what --policy applies to.
func addSearchFlags(fs *flag.FlagSet, defaultOut, outHelp, policyHelp string) *searchFlags {
	s := &searchFlags{
		duration: fs.Duration("duration", 0, "stop after this long (e.g. 60s, 10m; 0: no limit)"),
		out:      fs.String("out", defaultOut, outHelp),
		asJSON:   fs.Bool("json", false, "print the result as JSON"),
	}
	fs.Var(&s.policies, "policy", policyHelp)
	return s
}
