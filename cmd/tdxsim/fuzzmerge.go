package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/tdxsim/tdxsim/fuzz"
)

// cmdFuzzMerge is `tdxsim fuzz merge [--json] PATH...`: the shard
// summaries of one campaign (deploy/k8s/fuzz-job.yaml writes one per
// pod) merged into one, findings deduplicated by signature.
func cmdFuzzMerge(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tdxsim fuzz merge", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the merged summary as JSON")
	setUsage(fs, stderr, `usage: tdxsim fuzz merge [--json] PATH...

Merges the JSON summaries of a campaign's shards ('tdxsim fuzz --shard i/n
--json'): a PATH is a summary file, or a directory whose *.json files and
whose subdirectories' summary.json are summaries. Counts add up, coverage
is the union, and findings are deduplicated by signature (the set of
invariants broken), keeping the one with the smallest shrunk reproducer.
Shards of different campaigns (kernel, strategy, policies, injections)
are refused. Exit 1 when the merged campaign found a violation.`)
	if code := parseArgs(fs, args, stderr, 1, -1, "want at least one shard summary file or directory"); code >= 0 {
		return code
	}
	sums, names, err := fuzz.ReadSummaries(fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "tdxsim fuzz merge: %v\n", err)
		return exitBadInput
	}
	sum, err := fuzz.Merge(sums, names)
	if err != nil {
		fmt.Fprintf(stderr, "tdxsim fuzz merge: %v\n", err)
		return exitBadInput
	}
	if *asJSON {
		writeJSON(stdout, sum)
	} else {
		fmt.Fprintf(stdout, "merged %d shard summaries\n", len(sums))
		sum.WriteText(stdout)
	}
	if len(sum.Violations) > 0 {
		return exitCheck
	}
	return exitOK
}
