package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/tdxsim/tdxsim/web"
)

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tdxsim serve", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on (loopback by default; the UI has no authentication)")
	var policies policyFlag
	fs.Var(&policies, "policy", "the Compare page's second run is FILE with this policy set (repeatable; default hugepages=off)")
	kf := addKernelFlag(fs)
	setUsage(fs, stderr, `usage: tdxsim serve [flags] [FILE [FILE2]]

Runs FILE (the embedded default without one) and serves a web UI over it:
the GPA map of each TD (2 MiB cells by state; click to zoom into a cell's
512 pages), a timeline scrubber over the steps, the Secure EPT walk of a
GPA, the report with its charts, and FILE beside a second run (FILE2, or
FILE with --policy overrides, or FILE under a second --kernel) on the
Compare page. It reads only the
files it was given.`)
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() > 2 || (fs.NArg() == 2 && len(policies) > 0) {
		fmt.Fprintln(stderr, "tdxsim serve: at most two scenario files, and --policy only with one")
		return exitBadInput
	}
	if len(*kf) > 2 {
		fmt.Fprintln(stderr, "tdxsim serve: --kernel at most twice (FILE's, then the Compare page's second run's)")
		return exitBadInput
	}
	a, _, kB, code := kf.loadFirst("serve", fs.Arg(0), stderr)
	if a == nil {
		return code
	}
	nameA := fs.Arg(0)
	if nameA == "" {
		nameA = "default"
	}
	// B is FILE2, or FILE with the --policy overrides (hugepages=off
	// when none are given).
	pathB, nameB, bPolicies := fs.Arg(1), fs.Arg(1), policyFlag(nil)
	if fs.NArg() < 2 {
		pathB, bPolicies = fs.Arg(0), policies
		if len(bPolicies) == 0 && len(*kf) < 2 {
			bPolicies = policyFlag{{"hugepages", "off"}}
		}
		nameB = bPolicies.label(nameA)
		if len(*kf) == 2 {
			nameB = bPolicies.label(nameA + " kernel=" + kB)
		}
	}
	b, code := loadScenario("serve", pathB, kB, bPolicies, stderr)
	if b == nil {
		return code
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "tdxsim serve: %v\n", err)
		return exitBadInput
	}
	fmt.Fprintf(stderr, "tdxsim serve: running %s and %s...\n", nameA, nameB)
	s := web.New(nameA, a, nameB, b)
	go s.Prepare() // park a runner at every step: a query at any step only reads
	fmt.Fprintf(stdout, "tdxsim serve: http://%s/\n", ln.Addr())
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintf(stderr, "tdxsim serve: %v\n", err)
		return exitCheck
	}
	return exitOK
}
