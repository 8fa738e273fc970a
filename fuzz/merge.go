package fuzz

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tdxsim/tdxsim/scenario"
)

// SummaryFile is the name a campaign's JSON summary takes in its --out
// directory when a shard writes it there (deploy/k8s/fuzz-job.yaml);
// Merge also reads any other *.json file that decodes as a Summary.
const SummaryFile = "summary.json"

// maxSummaryBytes bounds one shard summary Merge reads: a summary holds
// counts, at most one finding per invariant and the coverage lists, so
// a file this large is not one.
const maxSummaryBytes = 16 << 20

// MergeInputError is a shard summary Merge cannot use: unreadable, not a
// campaign summary, or from a different campaign than the others.
type MergeInputError struct {
	Path string
	Err  error
}

func (e *MergeInputError) Error() string { return e.Path + ": " + e.Err.Error() }

// Unwrap returns Err.
func (e *MergeInputError) Unwrap() error { return e.Err }

// Signature is what Merge deduplicates findings by: the sorted set of
// invariants the finding's run broke. Two shards finding the same
// invariants broken found the same bug as far as the summary can tell;
// the finding with the smallest shrunk reproducer is kept.
func (fd Finding) Signature() string { return strings.Join(fd.Broken, ",") }

// ReadSummaries reads the shard summaries named by paths: a file is one
// summary; a directory contributes every *.json file directly in it
// (a shard's --out directory also holds its reproducers, which are YAML)
// and the summary.json of each subdirectory (one per shard).
func ReadSummaries(paths []string) ([]*Summary, []string, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, nil, &MergeInputError{p, err}
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		direct, _ := filepath.Glob(filepath.Join(p, "*.json"))
		nested, _ := filepath.Glob(filepath.Join(p, "*", SummaryFile))
		if len(direct)+len(nested) == 0 {
			return nil, nil, &MergeInputError{p, fmt.Errorf("no *.json shard summary in it or in its subdirectories' %s", SummaryFile)}
		}
		files = append(files, direct...)
		files = append(files, nested...)
	}
	slices.Sort(files)
	files = slices.Compact(files)
	sums := make([]*Summary, 0, len(files))
	for _, f := range files {
		s, err := readSummary(f)
		if err != nil {
			return nil, nil, &MergeInputError{f, err}
		}
		sums = append(sums, s)
	}
	return sums, files, nil
}

func readSummary(path string) (*Summary, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	if st.Size() > maxSummaryBytes {
		return nil, fmt.Errorf("%d bytes: larger than a campaign summary can be (%d)", st.Size(), maxSummaryBytes)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Summary
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("not a tdxsim fuzz --json summary: %w", err)
	}
	if s.Runs < 1 || s.Violations == nil || s.Findings == nil {
		return nil, fmt.Errorf("not a tdxsim fuzz --json summary: no runs, violations or findings")
	}
	return &s, nil
}

// Merge combines shard summaries of one campaign (the same kernel,
// policies, injections and strategy; disjoint seeds): counts add up,
// coverage is the union, findings are deduplicated by Signature keeping
// the smallest shrunk reproducer (fewest steps, then lowest seed), and
// the elapsed time is the longest shard's. Interleavings adds the
// shards' counts of distinct schedules, which is exact because the
// shards ran disjoint seeds. The result is the same whatever order the
// summaries come in.
func Merge(sums []*Summary, names []string) (*Summary, error) {
	if len(sums) == 0 {
		return nil, fmt.Errorf("fuzz merge: no shard summaries")
	}
	first := sums[0]
	out := &Summary{Strategy: first.Strategy, Kernel: first.Kernel, Policies: first.Policies, Inject: first.Inject, Faults: first.Faults,
		Outcomes: map[string]int{}, KernelResponses: map[string]int{}, Violations: map[string]int{}, Reproducers: []string{}, Findings: []Finding{}, Injected: map[string]uint64{}}
	out.Seeds = first.Seeds
	trans, locks, kinds := map[string]bool{}, map[string]bool{}, map[string]bool{}
	best := map[string]Finding{}
	for i, s := range sums {
		if why := sameCampaign(first, s); why != "" {
			return nil, &MergeInputError{names[i], fmt.Errorf("a different campaign than %s: %s", names[0], why)}
		}
		out.Runs += s.Runs
		out.Schedules += s.Schedules
		out.Steps += s.Steps
		out.Interleavings += s.Interleavings
		out.GuestOps += s.GuestOps
		out.GuestRefused += s.GuestRefused
		out.Workers += s.Workers
		out.ElapsedMS = max(out.ElapsedMS, s.ElapsedMS)
		out.Seeds[0] = min(out.Seeds[0], s.Seeds[0])
		out.Seeds[1] = max(out.Seeds[1], s.Seeds[1])
		out.Traces = append(out.Traces, s.Traces...)
		for k, n := range s.Violations {
			out.Violations[k] += n
		}
		for k, n := range s.Outcomes {
			out.Outcomes[k] += n
		}
		for k, n := range s.KernelResponses {
			out.KernelResponses[k] += n
		}
		for k, n := range s.Injected {
			out.Injected[k] += n
		}
		addTally(trans, s.Coverage.Transitions)
		addTally(locks, s.Coverage.LockEdges)
		addTally(kinds, s.Coverage.StepKinds)
		for _, fd := range s.Findings {
			sig := fd.Signature()
			if b, ok := best[sig]; !ok || fd.ShrunkSteps < b.ShrunkSteps || fd.ShrunkSteps == b.ShrunkSteps && fd.Seed < b.Seed {
				best[sig] = fd
			}
		}
	}
	for _, sig := range slices.Sorted(maps.Keys(best)) {
		fd := best[sig]
		out.Findings = append(out.Findings, fd)
		if fd.Reproducer != "" {
			out.Reproducers = append(out.Reproducers, fd.Reproducer)
		}
	}
	slices.Sort(out.Traces)
	out.Coverage = Coverage{
		Transitions: tally(trans, transitionNames()),
		LockEdges:   tally(locks, lockEdges()),
		StepKinds:   tally(kinds, scenario.StepKinds()),
	}
	if secs := float64(out.ElapsedMS) / 1000; secs > 0 {
		out.RunsPerSec = float64(out.Runs) / secs
		out.InterleavingsPerSec = float64(out.Interleavings) / secs
	}
	return out, nil
}

// sameCampaign says how b's campaign differs from a's ("" when it does
// not): shards of one campaign share everything but their seeds.
func sameCampaign(a, b *Summary) string {
	switch {
	case a.Kernel != b.Kernel:
		return fmt.Sprintf("kernel %q, not %q", b.Kernel, a.Kernel)
	case a.Strategy != b.Strategy:
		return fmt.Sprintf("strategy %q, not %q", b.Strategy, a.Strategy)
	case !slices.Equal(a.Policies, b.Policies):
		return fmt.Sprintf("policies %v, not %v", b.Policies, a.Policies)
	case !slices.Equal(a.Inject, b.Inject):
		return fmt.Sprintf("inject %v, not %v", b.Inject, a.Inject)
	case a.Faults != b.Faults:
		return fmt.Sprintf("faults %q, not %q", b.Faults, a.Faults)
	}
	return ""
}
