package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// examples are printed after a command's flags by `tdxsim help CMD` and
// `tdxsim CMD --help`; a new command adds its own here.
var examples = map[string][]string{
	"run": {
		"tdxsim run                                     # the embedded default: 4 GiB TD, 2 vCPUs, lazy accept",
		"tdxsim run examples/convert-splits.yaml --json  # the report as one JSON document",
		"tdxsim run examples/default.yaml --policy hugepages=off --trace t.json.gz",
		"tdxsim run - < my.yaml                         # a scenario from standard input",
	},
	"fuzz": {
		"tdxsim fuzz --runs 200",
		"tdxsim fuzz --duration 10m --hostile --out repro/",
		"tdxsim fuzz --runs 50 --policy hugepages=1G --json > summary.json",
		"tdxsim fuzz --shard 0/4 --duration 10m --out shard-0 --json > shard-0.json",
		"tdxsim fuzz merge shard-*.json   # the shards' summaries merged, findings deduplicated",
	},
	"explore": {
		"tdxsim explore examples/explore-lazy-accept.yaml --preemptions 2",
		"tdxsim explore fuzz/testdata/hazards/populate-gmem_populate.yaml --preemptions 2 --out repro/",
		"tdxsim explore small.yaml --preemptions 3 --max-schedules 20000 --duration 5m --json",
	},
	"compare": {
		"tdxsim compare examples/convert-splits.yaml --policy hugepages=off",
		"tdxsim compare examples/eager-vs-lazy.yaml examples/default.yaml --json",
	},
	"replay": {
		"tdxsim replay fuzz-out/sept-mirror-1.yaml",
		"tdxsim replay fuzz-out/sept-mirror-1.yaml --trace t.json.gz --trace-window 2..3",
		"tdxsim replay repro.yaml --json > report.json   # only the report on stdout; the step lines go to stderr",
	},
	"serve": {
		"tdxsim serve                                   # the default beside itself with hugepages=off",
		"tdxsim serve examples/convert-splits.yaml --policy hugepages=off --addr 127.0.0.1:9000",
		"tdxsim serve a.yaml b.yaml",
	},
	"bench": {
		"tdxsim bench --quick",
		"tdxsim bench --rounds 7 --json > bench.json",
	},
	"mrtd": {
		"tdxsim mrtd --layout examples/mrtd/layout.yaml",
		"tdxsim mrtd --firmware /usr/share/ovmf/OVMF.fd --sections",
	},
	"schema": {
		"tdxsim schema > scenario.schema.json   # for yaml-language-server's $schema",
		"tdxsim schema --report > report.schema.json",
	},
	"kernels": {
		"tdxsim kernels",
		"tdxsim kernels --json",
	},
	"version": {
		"tdxsim version",
		"tdxsim --version",
	},
}

// writeExamples prints cmd's examples, if it has any.
func writeExamples(w io.Writer, cmd string) {
	ex := examples[cmd]
	if len(ex) == 0 {
		return
	}
	fmt.Fprintln(w, "\nexamples:")
	for _, e := range ex {
		fmt.Fprintf(w, "  %s\n", e)
	}
}

// cmdHelp is `tdxsim help [CMD]`: the general help, or CMD's usage,
// flags and examples, on stdout.
func cmdHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stdout)
		return exitOK
	}
	if len(args) > 1 {
		fmt.Fprintln(stderr, "tdxsim help: want one command (see tdxsim help)")
		return exitBadInput
	}
	for _, c := range commands {
		if c.name == args[0] && c.name != "help" {
			return c.run([]string{"--help"}, stdout, stdout)
		}
	}
	fmt.Fprintf(stderr, "tdxsim help: unknown command %q (see tdxsim help)\n", args[0])
	return exitBadInput
}

// buildVersion is what `tdxsim version` prints: the module's version
// (v1.2.3, or "(devel)" for a build from a clone), the VCS revision and
// time the binary was built from ("modified" when the tree had changes),
// and the Go version, from the binary's build info.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "tdxsim: no build info (built without module support)"
	}
	var rev, at, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = " (modified)"
			}
		}
	}
	if rev == "" {
		rev = "unknown (built without VCS stamping, e.g. go run or go test)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "tdxsim %s (module %s)\n", orDevel(bi.Main.Version), bi.Main.Path)
	fmt.Fprintf(&b, "revision %s%s", rev, modified)
	if at != "" {
		fmt.Fprintf(&b, ", %s", at)
	}
	fmt.Fprintf(&b, "\nbuilt with %s\n", bi.GoVersion)
	return b.String()
}

func orDevel(v string) string {
	if v == "" {
		return "(devel)"
	}
	return v
}

// cmdVersion is `tdxsim version` (and `tdxsim --version`).
func cmdVersion(args []string, stdout, stderr io.Writer) int {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			fmt.Fprintln(stderr, "usage: tdxsim version\n\nPrints the module version, the VCS revision the binary was built from and the\nGo version, from the binary's build info.")
			writeExamples(stderr, "version")
			return exitOK
		}
	}
	if len(args) > 0 {
		fmt.Fprintln(stderr, "tdxsim version: takes no arguments")
		return exitBadInput
	}
	fmt.Fprint(stdout, buildVersion())
	return exitOK
}
