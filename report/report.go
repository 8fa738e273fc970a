// Package report turns what a run measured into text a person reads in ten
// seconds, and into stable JSON.
package report

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/tdxmodule/tdhost"
)

// Lifecycle is the summary of a SEAMCALL-level TD lifecycle run.
type Lifecycle struct {
	Seed           uint64            `json:"seed"`
	Seamcalls      map[string]uint64 `json:"seamcalls"`
	Failed         map[string]uint64 `json:"seamcalls_failed"`
	Tdcalls        map[string]uint64 `json:"tdcalls"`
	PAMTStatic     uint64            `json:"pamt_static_bytes"`
	PAMTDynamic    uint64            `json:"pamt_dynamic_bytes_peak"`
	SEPTPages      int               `json:"sept_pages_peak"`
	PagesReclaimed int               `json:"pages_reclaimed"`
	BusyRetries    int               `json:"busy_retries"`
	LeakedPages    int64             `json:"leaked_pages"`
	ChargedAfter   uint64            `json:"charged_pages_after_teardown"`
	Steps          uint64            `json:"steps"`
	MRTD           string            `json:"mrtd"`
	Violations     []string          `json:"violations"`
}

// NewLifecycle builds the report of a lifecycle run from its event counts
// and result. Violations gather hostmem/module violation events, lockdep
// findings, and the teardown rule: nothing leaked, nothing left charged.
func NewLifecycle(seed uint64, c *event.Counter, res tdhost.LifecycleResult) *Lifecycle {
	seam, td := SplitCalls(c)
	r := &Lifecycle{Seed: seed, Seamcalls: seam, Tdcalls: td, Failed: c.Failed(),
		PAMTStatic: res.PAMTPeak.Static, PAMTDynamic: res.PAMTPeak.Dynamic, SEPTPages: res.SEPTPagesPeak,
		PagesReclaimed: res.PagesReclaimed, BusyRetries: res.BusyRetries, LeakedPages: res.LeakedPages,
		ChargedAfter: res.ChargedAfter.Charged + res.ChargedAfter.Uncharged, Steps: res.Steps,
		MRTD: MRTDHex(res.MRTD), Violations: []string{}}
	for _, v := range c.Violations() {
		r.Violations = append(r.Violations, v.Name+": "+v.Detail)
	}
	for _, l := range res.LockDep {
		r.Violations = append(r.Violations, l.String())
	}
	if r.LeakedPages != 0 || r.ChargedAfter != 0 {
		r.Violations = append(r.Violations, fmt.Sprintf("teardown: %d pages leaked, %d still charged", r.LeakedPages, r.ChargedAfter))
	}
	return r
}

// SplitCalls separates SEAMCALL and TDCALL counts from a counter.
func SplitCalls(c *event.Counter) (seam, td map[string]uint64) {
	seam, td = map[string]uint64{}, map[string]uint64{}
	for k, v := range c.Calls() {
		if len(k) > 4 && k[:4] == "TDG." {
			td[k] = v
		} else {
			seam[k] = v
		}
	}
	return seam, td
}

// MRTDHex formats a digest.
func MRTDHex(d []byte) string { return hex.EncodeToString(d) }

// WriteJSON writes l as indented JSON.
func (l *Lifecycle) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(l)
}

// WriteText writes the human report.
func (l *Lifecycle) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "TD lifecycle (SEAMCALL level), seed %d, %d scheduler steps\n\n", l.Seed, l.Steps)
	fmt.Fprintln(w, "SEAMCALLs by leaf:")
	var total uint64
	for _, k := range event.SortedKeys(l.Seamcalls) {
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", k, l.Seamcalls[k], failedNote(l.Failed[k]))
		total += l.Seamcalls[k]
	}
	fmt.Fprintf(tw, "  total\t%d\t\n", total)
	for _, k := range event.SortedKeys(l.Tdcalls) {
		fmt.Fprintf(tw, "  %s (guest)\t%d\t%s\n", k, l.Tdcalls[k], failedNote(l.Failed[k]))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nMemory:\n")
	fmt.Fprintf(w, "  PAMT static            %s\n", humanBytes(l.PAMTStatic))
	fmt.Fprintf(w, "  PAMT dynamic (peak)    %s\n", humanBytes(l.PAMTDynamic))
	fmt.Fprintf(w, "  S-EPT pages (peak)     %d (%s)\n", l.SEPTPages, humanBytes(uint64(l.SEPTPages)*4096))
	fmt.Fprintf(w, "\nTeardown:\n")
	fmt.Fprintf(w, "  pages reclaimed        %d\n", l.PagesReclaimed)
	fmt.Fprintf(w, "  pages leaked           %d\n", l.LeakedPages)
	fmt.Fprintf(w, "  charged after teardown %d pages\n", l.ChargedAfter)
	fmt.Fprintf(w, "  OPERAND_BUSY retries   %d\n", l.BusyRetries)
	fmt.Fprintf(w, "\nMRTD %s\n", l.MRTD)
	if len(l.Violations) == 0 {
		fmt.Fprintln(w, "violations: none")
	} else {
		fmt.Fprintf(w, "violations: %d\n", len(l.Violations))
		for _, v := range l.Violations {
			fmt.Fprintf(w, "  %s\n", v)
		}
	}
	return nil
}

func failedNote(n uint64) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("(%d non-success)", n)
}

func humanBytes(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
