package mutation_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/internal/mutation"
)

var (
	tableOut = flag.String("mutation.table", "", "write the mutation score table (Markdown) to this file")
	fuzzRuns = flag.Int("mutation.fuzz", 0, "also run a generic hostile fuzz campaign of this many runs against each mutation, for the table")
)

// invariants are the names a mutation may expect (package check's).
var invariants = []string{check.MirrorSEPT, check.PrivateOwned, check.MappingLevel, check.SharedNotPrivate,
	check.DPAMT, check.Charged, check.CachePool, check.NoUseAfterFree, check.GuestReadsBack, check.LockOrder,
	check.NoDeadlock, check.ConversionProgress, check.NoKVMBug, check.Events, check.Teardown}

func TestTable(t *testing.T) {
	seen := map[mutation.ID]bool{}
	for _, m := range mutation.All {
		if seen[m.ID] {
			t.Errorf("%s listed twice", m.ID)
		}
		seen[m.ID] = true
		if !slices.Contains(invariants, m.Invariant) {
			t.Errorf("%s: invariant %q is not one of package check's", m.ID, m.Invariant)
		}
		if len(m.Args) == 0 || m.Args[0] != "run" && m.Args[0] != "fuzz" {
			t.Errorf("%s: campaign %q is neither a run nor a fuzz", m.ID, m.Args)
		}
		if got, ok := mutation.Lookup(string(m.ID)); !ok || got.ID != m.ID {
			t.Errorf("Lookup(%q) = %v, %v", m.ID, got.ID, ok)
		}
	}
	if len(mutation.All) < 10 {
		t.Errorf("%d mutations, want at least 10", len(mutation.All))
	}
}

// TestDefaultBuildHasNone: without the build tag no mutation can be on.
func TestDefaultBuildHasNone(t *testing.T) {
	if mutation.Built {
		t.Skip("built with -tags tdxsim_mutation")
	}
	t.Setenv(mutation.EnvVar, string(mutation.All[0].ID))
	for _, m := range mutation.All {
		if mutation.On(m.ID) {
			t.Errorf("On(%s) in the default build", m.ID)
		}
	}
}

// outcome is one campaign's result.
type outcome struct {
	exit    int
	failed  []string // invariants broken
	runs    int      // scenarios run (a fuzz campaign stops at its first finding)
	seconds float64  // wall time to the finding (fuzz) or of the run
}

// campaign runs bin with args from the repository root, with mutation
// active ("" for none).
func campaign(t *testing.T, bin, root string, args []string, active mutation.ID) outcome {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, mutation.EnvVar+"=") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	if active != "" {
		cmd.Env = append(cmd.Env, mutation.EnvVar+"="+string(active))
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	o := outcome{runs: 1, seconds: time.Since(start).Seconds()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		o.exit = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %s: %v", bin, strings.Join(args, " "), err)
	}
	if o.exit != 0 && o.exit != 1 {
		t.Fatalf("tdxsim %s (mutation %q): exit %d: %s", strings.Join(args, " "), active, o.exit, stderr.String())
	}
	var out struct {
		Checks *struct {
			Failed map[string]int `json:"failed"`
		} `json:"checks"` // a run's report
		Violations json.RawMessage `json:"violations"` // a fuzz summary's: runs by invariant
		Runs       int             `json:"runs"`
		Findings   []struct {
			FoundAfter int64 `json:"found_after_ms"`
		} `json:"findings"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("tdxsim %s: the output is not JSON: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var broken map[string]int
	if out.Checks != nil {
		broken = out.Checks.Failed
	} else {
		if err := json.Unmarshal(out.Violations, &broken); err != nil {
			t.Fatalf("tdxsim %s: violations: %v", strings.Join(args, " "), err)
		}
		o.runs = out.Runs
		if len(out.Findings) > 0 {
			o.seconds = float64(out.Findings[0].FoundAfter) / 1000
		}
	}
	for inv, n := range broken {
		if n > 0 {
			o.failed = append(o.failed, inv)
		}
	}
	slices.Sort(o.failed)
	return o
}

// TestMutationScore builds tdxsim with the mutations compiled in and runs
// each one's campaign: with the mutation it must fail (exit 1) with the
// invariant the mutation names; with none, the same campaign must be
// clean. It takes about a minute and a half on two cores, so -short skips
// it; run it with
//
//	go test -count=1 -run TestMutationScore ./internal/mutation/
//
// (scripts/mutation-score prints the score table).
func TestMutationScore(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tdxsim with -tags tdxsim_mutation and runs a campaign per mutation (about 90 s): run without -short")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "tdxsim-mutation")
	build := exec.Command("go", "build", "-tags", "tdxsim_mutation", "-o", bin, "./cmd/tdxsim")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags tdxsim_mutation: %v\n%s", err, out)
	}
	var generic []string
	if *fuzzRuns > 0 {
		generic = fuzzCampaign(*fuzzRuns)
		if base := campaign(t, bin, root, generic, ""); base.exit != 0 || len(base.failed) > 0 {
			t.Errorf("tdxsim %s without a mutation: exit %d, broken %v", shell(generic), base.exit, base.failed)
		}
	}
	var rows []string
	caught := 0
	for _, m := range mutation.All {
		t.Run(string(m.ID), func(t *testing.T) {
			base := campaign(t, bin, root, m.Args, "")
			if base.exit != 0 || len(base.failed) > 0 {
				t.Errorf("without the mutation the campaign is not clean: exit %d, broken %v", base.exit, base.failed)
			}
			got := campaign(t, bin, root, m.Args, m.ID)
			ok := got.exit == 1 && slices.Contains(got.failed, m.Invariant)
			row := fmt.Sprintf("| `%s` | %s | `tdxsim %s` |", m.ID, m.Layer, shell(m.Args))
			switch {
			case ok:
				caught++
				row += fmt.Sprintf(" %s | %d | %.1f |", strings.Join(got.failed, ", "), got.runs, got.seconds)
				if m.Escapes != "" {
					t.Errorf("caught by %v, but the table says it escapes (%s): drop Escapes", got.failed, m.Escapes)
				}
			case m.Escapes != "":
				row += fmt.Sprintf(" **escapes** %s: %s | %d | - |", m.Invariant, m.Escapes, got.runs)
			default:
				row += fmt.Sprintf(" **not caught** (broke %v) | %d | - |", got.failed, got.runs)
				t.Errorf("not caught: exit %d, broken %v, want %s", got.exit, got.failed, m.Invariant)
			}
			if generic != nil {
				if g := campaign(t, bin, root, generic, m.ID); g.exit == 1 {
					row += fmt.Sprintf(" %s after %d runs, %.1f s |", strings.Join(g.failed, ", "), g.runs, g.seconds)
				} else {
					row += fmt.Sprintf(" not in %d runs |", g.runs)
				}
			}
			rows = append(rows, row)
		})
	}
	t.Logf("mutation score: %d/%d caught", caught, len(mutation.All))
	if *tableOut != "" {
		var b strings.Builder
		fmt.Fprintf(&b, "mutation score: %d/%d caught\n\n", caught, len(mutation.All))
		head, rule := "| mutation | layer | campaign | invariants broken | runs to catch | seconds to catch |", "| --- | --- | --- | --- | ---: | ---: |"
		if generic != nil {
			fmt.Fprintf(&b, "generic campaign: `tdxsim %s`\n\n", shell(generic))
			head, rule = head+" generic campaign |", rule+" --- |"
		}
		b.WriteString(head + "\n" + rule + "\n")
		for _, r := range rows {
			b.WriteString(r + "\n")
		}
		if err := os.WriteFile(*tableOut, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// shell is args as a command line, the empty argument quoted.
func shell(args []string) string {
	var s []string
	for _, a := range args {
		if a == "" {
			a = `""`
		}
		s = append(s, a)
	}
	return strings.Join(s, " ")
}

// fuzzCampaign is the generic campaign of -mutation.fuzz: hostile guests
// (a third of the guest workloads) from seed 1, stopping at the first
// finding.
func fuzzCampaign(runs int) []string {
	return []string{"fuzz", "--hostile", "--seed", "1", "--runs", fmt.Sprint(runs), "--workers", "1", "--schedules", "2",
		"--shrink-runs", "1", "--out", "", "--json", "--stop-at-finding"}
}
