package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/tdxsim/tdxsim/kernel"
)

// kernelJSON is one element of `tdxsim kernels --json`: exactly these six
// keys.
type kernelJSON struct {
	Name        string           `json:"name"`
	Base        string           `json:"base"`
	Series      []kernel.Series  `json:"series"`
	Merged      bool             `json:"merged"`
	Sources     []kernel.Source  `json:"sources"`
	Differences []differenceJSON `json:"differences"`
}

// differenceJSON is one way a profile differs from its base: a scenario
// policy it sets (kind "policy", always implemented) or a named behaviour
// (kind "behaviour", implemented or not yet).
type differenceJSON struct {
	Setting     string `json:"setting"` // key=value
	Kind        string `json:"kind"`    // policy | behaviour
	Implemented bool   `json:"implemented"`
	Verified    bool   `json:"verified"`
	Source      string `json:"source"`
	Note        string `json:"note,omitempty"`
}

func differences(p kernel.Profile) []differenceJSON {
	out := make([]differenceJSON, 0, len(p.Policies)+len(p.Behaviours))
	for _, pol := range p.Policies {
		out = append(out, differenceJSON{Setting: pol.String(), Kind: "policy", Implemented: true,
			Verified: p.SourceVerified(pol.Source), Source: pol.Source})
	}
	for _, b := range p.Behaviours {
		out = append(out, differenceJSON{Setting: b.Flag, Kind: "behaviour", Implemented: b.Implemented,
			Verified: b.Verified, Source: b.Source, Note: b.Note})
	}
	return out
}

// cmdKernels is `tdxsim kernels`: list the kernel profiles.
func cmdKernels(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tdxsim kernels", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the profiles as one JSON array")
	setUsage(fs, stderr, `usage: tdxsim kernels [--json] [NAME...]

Lists the kernel profiles: the release or tree each starts from, the series
applied (version, date, lore Message-ID or tag), whether it is merged, the
scenario policies it sets, the behaviours the model does not do yet, and
the sources, each marked verified or not. With NAMEs, only those profiles.`)
	if code := parse(fs, args, stderr); code >= 0 {
		return code
	}
	profiles := kernel.All()
	if fs.NArg() > 0 {
		profiles = profiles[:0:0]
		for _, name := range fs.Args() {
			p, err := kernel.Lookup(name)
			if err != nil {
				fmt.Fprintf(stderr, "tdxsim kernels: %v\n", err)
				return exitBadInput
			}
			profiles = append(profiles, p)
		}
	}
	if *asJSON {
		out := make([]kernelJSON, len(profiles))
		for i, p := range profiles {
			out[i] = kernelJSON{Name: p.Name, Base: p.Base, Series: p.Series, Merged: p.Merged,
				Sources: p.Sources, Differences: differences(p)}
		}
		writeJSON(stdout, out)
		return exitOK
	}
	for i, p := range profiles {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		writeKernelText(stdout, p)
	}
	return exitOK
}

func writeKernelText(w io.Writer, p kernel.Profile) {
	state := "not merged"
	if p.Merged {
		state = "merged"
	}
	fmt.Fprintf(w, "%s (%s; base %s)\n  %s\n", p.Name, state, p.Base, p.Summary)
	fmt.Fprintln(w, "  series:")
	for _, s := range p.Series {
		merged := ""
		if s.Merged {
			merged = ", merged"
		}
		fmt.Fprintf(w, "    %s %s (%s%s) %s\n", s.Name, s.Version, s.Date, merged, s.Ref)
		if s.Note != "" {
			fmt.Fprintf(w, "      %s\n", s.Note)
		}
	}
	if len(p.Policies) > 0 {
		fmt.Fprintf(w, "  policies: %s\n", strings.Join(p.PolicyPairs(), " "))
	}
	for _, group := range []struct {
		title       string
		implemented bool
	}{{"modelled", true}, {"not modelled yet", false}} {
		var lines []string
		for _, b := range p.Behaviours {
			if b.Implemented != group.implemented {
				continue
			}
			line := "    " + b.Flag
			if !b.Verified {
				line += " (unverified)"
			}
			if b.Note != "" {
				line += ": " + b.Note
			}
			lines = append(lines, line)
		}
		if len(lines) > 0 {
			fmt.Fprintf(w, "  %s:\n%s\n", group.title, strings.Join(lines, "\n"))
		}
	}
	fmt.Fprintln(w, "  sources:")
	for _, s := range p.Sources {
		mark := ""
		if !s.Verified {
			mark = " (unverified: " + s.Note + ")"
		}
		fmt.Fprintf(w, "    %s: %s%s\n", s.Ref, s.What, mark)
	}
}
