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
	"github.com/tdxsim/tdxsim/vmm"
)

// Lifecycle is the summary of a TD lifecycle run through the whole stack
// (VMM, KVM, TDP MMU, KVM's TDX code, guest_memfd, TDX module).
type Lifecycle struct {
	Seed         uint64            `json:"seed"`
	Seamcalls    map[string]uint64 `json:"seamcalls"`
	Failed       map[string]uint64 `json:"seamcalls_failed"`
	Tdcalls      map[string]uint64 `json:"tdcalls"`
	Mappings     map[string]int64  `json:"mappings"`      // private leaves by size at the end
	MappingsPeak map[string]int64  `json:"mappings_peak"` // private leaves by size at their peak
	SharedPeak   int64             `json:"shared_mappings_peak"`
	Memory       Memory            `json:"memory"`
	Conversions  Conversions       `json:"conversions"`
	Splits       map[string]int64  `json:"splits"` // huge private leaves split (TDH.MEM.PAGE.DEMOTE), by the level split
	Faults       Faults            `json:"faults"`
	Teardown     Teardown          `json:"teardown"`
	Steps        uint64            `json:"steps"`
	MRTD         string            `json:"mrtd"`
	Violations   []string          `json:"violations"`
}

// Memory is the TDX memory overhead.
type Memory struct {
	PAMTBytes        uint64 `json:"pamt_bytes"` // static + dynamic at peak
	PAMTStaticBytes  uint64 `json:"pamt_static_bytes"`
	PAMTDynamicBytes uint64 `json:"pamt_dynamic_bytes_peak"`
	DPAMTRanges      int    `json:"dpamt_ranges_peak"`
	SEPTPages        int    `json:"sept_pages"` // at peak
	PageTables       int64  `json:"kvm_page_tables_peak"`
}

// Conversions counts MapGPA conversions the VMM carried out.
type Conversions struct {
	ToShared       int64  `json:"to_shared"`
	ToPrivate      int64  `json:"to_private"`
	BytesToShared  uint64 `json:"bytes_to_shared"`
	BytesToPrivate uint64 `json:"bytes_to_private"`
}

// Faults counts EPT-violation handling.
type Faults struct {
	EPTViolations int64 `json:"ept_violations"`
	Fixed         int64 `json:"fixed"`
	Retries       int64 `json:"retries"`
	BusyRetries   int64 `json:"busy_retries"`
}

// Teardown is what the end of the TD left.
type Teardown struct {
	SEPTPagesReclaimed    int64  `json:"sept_pages_reclaimed"`
	ControlPagesReclaimed int64  `json:"control_pages_reclaimed"`
	LeakedPages           int64  `json:"leaked_pages"`
	ChargedAfter          uint64 `json:"charged_pages_after"`
}

var levelNames = [3]string{"4K", "2M", "1G"}

// NewLifecycle builds the report of a lifecycle run from its event counts
// and result. Violations gather violation events, lockdep findings, what
// the guest read wrong, a KVM_BUG_ON, and the teardown rule: nothing
// leaked, nothing left charged.
func NewLifecycle(seed uint64, c *event.Counter, res vmm.LifecycleResult) *Lifecycle {
	seam, td := SplitCalls(c)
	r := &Lifecycle{Seed: seed, Seamcalls: seam, Tdcalls: td, Failed: c.Failed(),
		Mappings: map[string]int64{}, MappingsPeak: map[string]int64{}, SharedPeak: res.MMU.PeakMapped[0][0],
		Splits: map[string]int64{"2M": res.MMU.Splits[1], "1G": res.MMU.Splits[2]},
		Memory: Memory{PAMTBytes: res.PAMTPeak.Total(), PAMTStaticBytes: res.PAMTPeak.Static, PAMTDynamicBytes: res.PAMTPeak.Dynamic,
			DPAMTRanges: res.DPAMTRanges, SEPTPages: res.SEPTPagesPeak, PageTables: res.PageTablesPeak},
		Conversions: Conversions{ToShared: res.VMM.ToShared, ToPrivate: res.VMM.ToPrivate,
			BytesToShared: res.VMM.BytesToShared, BytesToPrivate: res.VMM.BytesToPrivate},
		Faults: Faults{EPTViolations: res.TD.EPTViolations, Fixed: res.MMU.Fixed, Retries: res.MMU.Retries, BusyRetries: res.TD.BusyRetries},
		Teardown: Teardown{SEPTPagesReclaimed: res.TD.SEPTPagesReclaimed, ControlPagesReclaimed: res.TD.ControlPagesReclaimed,
			LeakedPages: res.LeakedPages, ChargedAfter: res.ChargedAfter.Charged + res.ChargedAfter.Uncharged},
		Steps: res.Steps, MRTD: MRTDHex(res.MRTD), Violations: []string{}}
	for l, name := range levelNames {
		r.Mappings[name] = res.MMU.Mapped[1][l]
		r.MappingsPeak[name] = res.MMU.PeakMapped[1][l]
	}
	for _, v := range c.Violations() {
		r.Violations = append(r.Violations, v.Name+": "+v.Detail)
	}
	for _, l := range res.LockDep {
		r.Violations = append(r.Violations, l.String())
	}
	for _, g := range res.GuestErrors {
		r.Violations = append(r.Violations, "guest: "+g)
	}
	if res.Bugged != "" {
		r.Violations = append(r.Violations, "KVM_BUG_ON: "+res.Bugged)
	}
	if r.Teardown.LeakedPages != 0 || r.Teardown.ChargedAfter != 0 {
		r.Violations = append(r.Violations, fmt.Sprintf("teardown: %d pages leaked, %d still charged", r.Teardown.LeakedPages, r.Teardown.ChargedAfter))
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
	fmt.Fprintf(w, "TD lifecycle (VMM -> KVM -> TDP MMU -> TDX module), seed %d, %d scheduler steps\n\n", l.Seed, l.Steps)
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
	fmt.Fprintf(w, "\nPrivate mappings (mirror root): peak 4K %d, 2M %d, 1G %d; at the end 4K %d, 2M %d, 1G %d\n",
		l.MappingsPeak["4K"], l.MappingsPeak["2M"], l.MappingsPeak["1G"], l.Mappings["4K"], l.Mappings["2M"], l.Mappings["1G"])
	fmt.Fprintf(w, "Splits of huge private mappings: %d at 2M, %d at 1G\n", l.Splits["2M"], l.Splits["1G"])
	fmt.Fprintf(w, "Shared mappings (direct root): peak %d\n", l.SharedPeak)
	fmt.Fprintf(w, "Faults: %d EPT violations, %d fixed, %d retried, %d OPERAND_BUSY retries\n",
		l.Faults.EPTViolations, l.Faults.Fixed, l.Faults.Retries, l.Faults.BusyRetries)
	fmt.Fprintf(w, "Conversions: %d to shared (%s), %d to private (%s)\n", l.Conversions.ToShared,
		humanBytes(l.Conversions.BytesToShared), l.Conversions.ToPrivate, humanBytes(l.Conversions.BytesToPrivate))
	fmt.Fprintf(w, "\nMemory:\n")
	fmt.Fprintf(w, "  PAMT static            %s\n", humanBytes(l.Memory.PAMTStaticBytes))
	fmt.Fprintf(w, "  PAMT dynamic (peak)    %s in %d 2 MiB ranges\n", humanBytes(l.Memory.PAMTDynamicBytes), l.Memory.DPAMTRanges)
	fmt.Fprintf(w, "  S-EPT pages (peak)     %d (%s)\n", l.Memory.SEPTPages, humanBytes(uint64(l.Memory.SEPTPages)*4096))
	fmt.Fprintf(w, "  KVM page tables (peak) %d\n", l.Memory.PageTables)
	fmt.Fprintf(w, "\nTeardown:\n")
	fmt.Fprintf(w, "  S-EPT pages reclaimed    %d\n", l.Teardown.SEPTPagesReclaimed)
	fmt.Fprintf(w, "  control pages reclaimed  %d\n", l.Teardown.ControlPagesReclaimed)
	fmt.Fprintf(w, "  pages leaked             %d\n", l.Teardown.LeakedPages)
	fmt.Fprintf(w, "  charged after teardown   %d pages\n", l.Teardown.ChargedAfter)
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
