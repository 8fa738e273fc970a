package report

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/tdxsim/tdxsim/event"
)

// Keys of Run.Injected for the busy rate and for failed allocations.
const (
	InjectedBusy        = "TDX_OPERAND_BUSY"
	InjectedAllocFailed = "allocation failed"
)

// Run is the report of one scenario run. Its JSON form is the stable
// schema `tdxsim run --json` prints (documented in the README); new keys
// may be added, existing ones keep their meaning.
type Run struct {
	Scenario string `json:"scenario"`
	// Kernel names the kernel profile the run stood for (tdxsim kernels).
	Kernel string `json:"kernel"`
	Seed   uint64 `json:"seed"`
	Steps  uint64 `json:"scheduler_steps"`
	// Schedule identifies the interleaving (sched.ScheduleHash, hex);
	// empty for a run on the parallel scheduler.
	Schedule string `json:"schedule,omitempty"`
	// Seamcalls counts host SEAMCALLs by leaf name; SeamcallsFailed those
	// that returned a non-success status; SeamcallNS their modeled time.
	Seamcalls       map[string]uint64 `json:"seamcalls"`
	SeamcallsFailed map[string]uint64 `json:"seamcalls_failed"`
	SeamcallNS      map[string]uint64 `json:"seamcall_modeled_ns"`
	Tdcalls         map[string]uint64 `json:"tdcalls"`
	// Mappings are private (mirror-root) leaves by size at the end of the
	// run, summed over TDs; MappingsPeak at their peak.
	Mappings     map[string]int64 `json:"mappings"`
	MappingsPeak map[string]int64 `json:"mappings_peak"`
	SharedPeak   int64            `json:"shared_mappings_peak"`
	Memory       Memory           `json:"memory"`
	Conversions  Conversions      `json:"conversions"`
	// Splits counts huge private leaves split (TDH.MEM.PAGE.DEMOTE) by
	// the size split.
	Splits          map[string]int64  `json:"splits"`
	PageCacheTopUps map[string]uint64 `json:"page_cache_topups"`
	Faults          Faults            `json:"faults"`
	Guest           Guest             `json:"guest"`
	Teardown        Teardown          `json:"teardown"`
	Checks          Checks            `json:"checks"`
	// Violations lists the first MaxViolations violations found, in
	// order; ViolationsTotal counts them all.
	Violations      []string `json:"violations"`
	ViolationsTotal int      `json:"violations_total"`
	// Injected counts the faults injected (scenario inject, --inject):
	// InjectedBusy (the busy rate), "<leaf> <status>" (fail entries),
	// InjectedAllocFailed.
	Injected map[string]uint64 `json:"injected,omitempty"`
	// Hostile counts a hostile guest's operations by what the host
	// answered ("accept: TDX_OPERAND_INVALID(RCX)").
	Hostile      map[string]int64 `json:"hostile,omitempty"`
	Expectations []Expectation    `json:"expectations"`
	// MRTD is the first TD's measurement (hex); MRTDs every TD's by name.
	MRTD  string            `json:"mrtd"`
	MRTDs map[string]string `json:"mrtds"`
	// ModeledNS is modeled time by phase ("build", "boot", "touch",
	// "convert", ..., "teardown", summed over steps of that kind) and
	// "total"; Phases the same per step, in order; ModeledNSByThread per
	// simulated thread ("td0/vcpu1", "td0/vmm").
	ModeledNS         map[string]uint64 `json:"modeled_ns"`
	Phases            []Phase           `json:"phases"`
	ModeledNSByThread map[string]uint64 `json:"modeled_ns_by_thread"`
	TDs               []TD              `json:"tds"`
	// Error is what stopped the run early, if anything did.
	Error string `json:"error,omitempty"`
	// Outcome is how the run ended (check.Classify): "clean",
	// "kernel_response" (the kernel answered injected faults the way its
	// source says, nothing else broke) or "violation".
	Outcome string `json:"outcome"`
	// KernelResponses counts the kernel's responses to injected faults by
	// kind (check.RespKVMBugOn, ...), each with the kernel function that
	// responded and the fault it answered.
	KernelResponses map[string]KernelResponse `json:"kernel_responses,omitempty"`

	// Mappings2MEnd is Mappings["2M"] under the huge-page series' name for
	// it: 2 MiB private mappings when the timeline (the boot) ends.
	Mappings2MEnd int64 `json:"mappings_2m_end"`
}

// KernelResponse is one kind of kernel response in a run: how often, and
// by "kernel function <- injected fault". For guest_memfd freeing a page a
// dead TD still maps, Reused says how many of those pages were handed out
// again while the TDX module still held them.
type KernelResponse struct {
	Count  int            `json:"count"`
	Causes map[string]int `json:"causes"`
	Reused *int64         `json:"reused,omitempty"`
}

// Memory is the TDX memory overhead and what each VM was charged.
type Memory struct {
	PAMTBytes        uint64 `json:"pamt_bytes"` // static + dynamic at peak
	PAMTStaticBytes  uint64 `json:"pamt_static_bytes"`
	PAMTDynamicBytes uint64 `json:"pamt_dynamic_bytes_peak"`
	DPAMTRanges      int    `json:"dpamt_ranges_peak"`
	// PAMTRefcountBytes is the kernel's Dynamic PAMT refcount array (one
	// atomic_t per 2 MiB), as the kernel profile sizes it: over RAM only
	// (DPAMT v4) or from 0 to max_pfn (v6); 0 with static PAMT. Kernel
	// memory outside the TDX module, so not in PAMTBytes; MaxPFNBytes is
	// the host.max_pfn it was sized for.
	PAMTRefcountBytes uint64 `json:"pamt_refcount_bytes"`
	RefcountArray     string `json:"pamt_refcount_array"`
	MaxPFNBytes       uint64 `json:"max_pfn_bytes"`
	SEPTPages         int    `json:"sept_pages"` // at peak, summed over TDs
	PageTables        int64  `json:"kvm_page_tables_peak"`
	// ChargedBytes is the host memory charged to each VM's account at
	// its peak (page tables, caches, S-EPT and control pages, guest_memfd
	// folios); ChargedBytesEnd after teardown (0 unless something leaked).
	ChargedBytes    map[string]uint64 `json:"charged_bytes"`
	ChargedBytesEnd map[string]uint64 `json:"charged_bytes_end"`
}

// Conversions counts MapGPA conversions the VMMs carried out.
type Conversions struct {
	ToShared       int64  `json:"to_shared"`
	ToPrivate      int64  `json:"to_private"`
	BytesToShared  uint64 `json:"bytes_to_shared"`
	BytesToPrivate uint64 `json:"bytes_to_private"`
	PunchedBytes   uint64 `json:"punched_bytes"`
}

// Add counts o's conversions into c (a TD's into the run's).
func (c *Conversions) Add(o Conversions) {
	c.ToShared += o.ToShared
	c.ToPrivate += o.ToPrivate
	c.BytesToShared += o.BytesToShared
	c.BytesToPrivate += o.BytesToPrivate
	c.PunchedBytes += o.PunchedBytes
}

// Faults counts EPT-violation handling.
type Faults struct {
	EPTViolations int64 `json:"ept_violations"`
	Fixed         int64 `json:"fixed"`
	Retries       int64 `json:"retries"`
	BusyRetries   int64 `json:"busy_retries"`
	// WriteLocks counts kvm->mmu_lock taken for write in the EPT-violation
	// path (the accept-level rule's split and guest inhibit).
	WriteLocks int64 `json:"write_locks"`
}

// Guest counts what the guests did.
type Guest struct {
	Accepts       map[string]int64 `json:"accepts"` // successful TDG.MEM.PAGE.ACCEPT by level
	SizeMismatch  int64            `json:"accept_size_mismatch"`
	LazyAccepts   int64            `json:"lazy_accepts"`
	Touches       int64            `json:"touches"`
	SharedTouches int64            `json:"shared_touches"`
	// Accepts4KWhere2M counts EPT violations raised by a 4K
	// TDG.MEM.PAGE.ACCEPT at a GFN KVM could have mapped at 2M; ByVCPU
	// by "td/vcpuN" (vCPUs with none left out).
	Accepts4KWhere2M       int64            `json:"accepts_4k_where_2m"`
	Accepts4KWhere2MByVCPU map[string]int64 `json:"accepts_4k_where_2m_by_vcpu"`
}

// Teardown is what the end of the TDs left.
type Teardown struct {
	SEPTPagesReclaimed    int64 `json:"sept_pages_reclaimed"`
	ControlPagesReclaimed int64 `json:"control_pages_reclaimed"`
	// PrivateReclaimed counts private leaves by level ("4K", "2M", "1G")
	// taken back with TDH.PHYMEM.PAGE.RECLAIM after KVM_TDX_TERMINATE_VM
	// released the HKID (teardown=terminate_vm), instead of removed.
	PrivateReclaimed map[string]int64 `json:"private_reclaimed,omitempty"`
	LeakedPages      int64            `json:"leaked_pages"`
	// LeakedOnPurpose is how many of LeakedPages the kernel left behind on
	// purpose after an injected fault (a page tdx_reclaim_page() could not
	// take back, control pages left with the HKID still assigned, the
	// Dynamic PAMT pairs they keep); teardown_reclaims_all allows them.
	LeakedOnPurpose int64 `json:"leaked_on_purpose,omitempty"`
	// HeldByModule is what the TDX module still holds after a teardown
	// KVM could not finish (a VM killed by KVM_BUG_ON): pages left on
	// purpose, never handed back while they may still be mapped.
	HeldByModule uint64 `json:"held_by_module,omitempty"`
	ChargedAfter uint64 `json:"charged_pages_after"`
}

// Checks counts the invariant checks the run made.
type Checks struct {
	Run    int      `json:"run"`
	Passed int      `json:"passed"`
	Names  []string `json:"names"`
	// Failed counts, by invariant, the evaluations that found a
	// violation (a check runs after every step).
	Failed map[string]int `json:"failed"`
}

// Expectation is one of the scenario's expectations and how it went.
type Expectation struct {
	What   string `json:"what"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// TD is one TD's part of the report.
type TD struct {
	Name         string           `json:"name"`
	MemoryBytes  uint64           `json:"memory_bytes"`
	VCPUs        int              `json:"vcpus"`
	MRTD         string           `json:"mrtd"`
	Mappings     map[string]int64 `json:"mappings"`
	MappingsPeak map[string]int64 `json:"mappings_peak"`
	SEPTPages    int              `json:"sept_pages_peak"`
	Splits       map[string]int64 `json:"splits"`
	ChargedBytes uint64           `json:"charged_bytes_peak"`
	Conversions  Conversions      `json:"conversions"`
	Bugged       string           `json:"bugged,omitempty"`
	// Firmware is the TDVF image the TD was built from (the scenario's
	// firmware), FirmwareSections what the build did with its sections,
	// in the order it added them.
	Firmware         string            `json:"firmware,omitempty"`
	FirmwareSections []FirmwareSection `json:"firmware_sections,omitempty"`
}

// FirmwareSection is one TDVF section as the build added it: where it
// went, what the image says of it, and the pages TDH.MEM.PAGE.ADD added
// and TDH.MR.EXTEND measured (`run --json` and `mrtd --firmware --json`).
type FirmwareSection struct {
	Index         int    `json:"index"` // in the image's metadata
	Type          string `json:"type"`  // BFV, CFV, TD_HOB, TempMem
	GPA           uint64 `json:"gpa"`
	Size          uint64 `json:"size"`
	DataOffset    uint32 `json:"data_offset"`
	RawDataSize   uint32 `json:"raw_data_size"`
	Attributes    string `json:"attributes"` // MR.EXTEND, PAGE.AUG, or -
	PagesAdded    uint64 `json:"pages_added"`
	PagesMeasured uint64 `json:"pages_measured"`
}

// MaxViolations is how many violations a report lists (the count is in
// Run.ViolationsTotal); the text report prints the first TextViolations.
const (
	MaxViolations  = 100
	TextViolations = 10
)

// LevelNames are the mapping sizes, by addr.Level.
var LevelNames = [3]string{"4K", "2M", "1G"}

// Failed reports whether the run broke a check or an expectation.
func (r *Run) Failed() bool {
	if len(r.Violations) > 0 {
		return true
	}
	for _, e := range r.Expectations {
		if !e.OK {
			return true
		}
	}
	return false
}

// SplitCalls separates SEAMCALL and TDCALL counts from a counter.
func SplitCalls(c *event.Counter) (seam, td map[string]uint64) {
	seam, td = map[string]uint64{}, map[string]uint64{}
	for k, v := range c.Calls() {
		if strings.HasPrefix(k, "TDG.") {
			td[k] = v
		} else {
			seam[k] = v
		}
	}
	return seam, td
}

// WriteJSON writes r as indented JSON.
func (r *Run) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report a person reads in ten seconds: phases with
// modeled time, SEAMCALLs by leaf with count and time, memory, mappings,
// conversions, checks, the MRTD.
func (r *Run) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "%s: kernel %s, seed %d, %d scheduler steps, modeled %s\n", r.Scenario, r.Kernel, r.Seed, r.Steps, Duration(r.ModeledNS["total"]))
	for _, td := range r.TDs {
		fmt.Fprintf(w, "  %s: %s, %d vCPUs%s\n", td.Name, HumanBytes(td.MemoryBytes), td.VCPUs, bugNote(td.Bugged))
	}
	fmt.Fprintln(w, "\nPhases (modeled time: the busiest thread of each step)")
	for _, p := range r.Phases {
		fmt.Fprintf(tw, "  %s\t%s\t%d SEAMCALLs\t\n", p.Name, Duration(p.ModeledNS), p.Seamcalls)
	}
	tw.Flush()
	r.writeFirmware(w)
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "SEAMCALLs by leaf\tcount\tmodeled\t")
	var total, totalNS uint64
	for _, k := range event.SortedKeys(r.Seamcalls) {
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", k, r.Seamcalls[k], Duration(r.SeamcallNS[k]), failedNote(r.SeamcallsFailed[k]))
		total += r.Seamcalls[k]
		totalNS += r.SeamcallNS[k]
	}
	fmt.Fprintf(tw, "  total (time summed over threads)\t%d\t%s\t\n", total, Duration(totalNS))
	for _, k := range event.SortedKeys(r.Tdcalls) {
		// Executions: an ACCEPT of an unmapped page exits to KVM, which
		// AUGs it, and the guest executes it again (see Guest: accepts).
		fmt.Fprintf(tw, "  %s (guest, executions)\t%d\t%s\t%s\n", k, r.Tdcalls[k], Duration(r.SeamcallNS[k]), failedNote(r.SeamcallsFailed[k]))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nPrivate mappings: at peak (each size its own peak) 4K %d, 2M %d, 1G %d; at the end 4K %d, 2M %d, 1G %d; shared 4K leaves at peak %d\n",
		r.MappingsPeak["4K"], r.MappingsPeak["2M"], r.MappingsPeak["1G"], r.Mappings["4K"], r.Mappings["2M"], r.Mappings["1G"], r.SharedPeak)
	fmt.Fprintf(w, "Splits: %d at 2M, %d at 1G. Page-cache top-ups (refills, not pages): %d\n", r.Splits["2M"], r.Splits["1G"], sum(r.PageCacheTopUps))
	fmt.Fprintf(w, "Faults: %d EPT violations, %d retried, %d OPERAND_BUSY retries; %d fixed (RET_PF_FIXED of every map, the build's included)\n",
		r.Faults.EPTViolations, r.Faults.Retries, r.Faults.BusyRetries, r.Faults.Fixed)
	fmt.Fprintf(w, "Huge-page boot counters: %d 4K accepts where KVM could map 2M%s; %d fault-path write mmu_lock; %d 2M private mappings at the end\n",
		r.Guest.Accepts4KWhere2M, byVCPUNote(r.Guest.Accepts4KWhere2MByVCPU), r.Faults.WriteLocks, r.Mappings2MEnd)
	fmt.Fprintf(w, "Guest: accepts 4K %d, 2M %d, 1G %d (successes; %d size mismatches, %d 2 MiB units accepted on first touch); %d private and %d shared touches\n",
		r.Guest.Accepts["4K"], r.Guest.Accepts["2M"], r.Guest.Accepts["1G"], r.Guest.SizeMismatch, r.Guest.LazyAccepts, r.Guest.Touches, r.Guest.SharedTouches)
	fmt.Fprintf(w, "Conversions (MapGPA exits, at most 2 MiB each): %d to shared (%s), %d to private (%s); %s punched\n", r.Conversions.ToShared,
		HumanBytes(r.Conversions.BytesToShared), r.Conversions.ToPrivate, HumanBytes(r.Conversions.BytesToPrivate), HumanBytes(r.Conversions.PunchedBytes))
	if len(r.Hostile) > 0 {
		var n int64
		for _, c := range r.Hostile {
			n += c
		}
		fmt.Fprintf(w, "Hostile guest: %d operations, by what the host answered:\n", n)
		for _, k := range slices.Sorted(maps.Keys(r.Hostile)) {
			fmt.Fprintf(w, "  %8d  %s\n", r.Hostile[k], k)
		}
	}
	if len(r.Injected) > 0 {
		var parts []string
		for _, k := range event.SortedKeys(r.Injected) {
			parts = append(parts, fmt.Sprintf("%s %d", k, r.Injected[k]))
		}
		fmt.Fprintf(w, "Faults injected: %s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w, "\nMemory (each peak its own maximum over step boundaries, not one moment)")
	fmt.Fprintf(w, "  PAMT static %s, dynamic at peak %s (%d 2 MiB ranges)\n", HumanBytes(r.Memory.PAMTStaticBytes),
		HumanBytes(r.Memory.PAMTDynamicBytes), r.Memory.DPAMTRanges)
	if r.Memory.PAMTRefcountBytes > 0 {
		fmt.Fprintf(w, "  PAMT refcounts (kernel, 4 bytes per 2 MiB, %s array, max_pfn << 12 = %#x): %s\n", r.Memory.RefcountArray,
			r.Memory.MaxPFNBytes, HumanBytes(r.Memory.PAMTRefcountBytes))
	}
	fmt.Fprintf(w, "  S-EPT pages at peak %d (%s); KVM page tables at peak %d\n", r.Memory.SEPTPages, HumanBytes(uint64(r.Memory.SEPTPages)*4096), r.Memory.PageTables)
	for _, k := range event.SortedKeys(r.Memory.ChargedBytes) {
		fmt.Fprintf(w, "  charged to %s (host pages held by its account, whole guest_memfd folios included): %s at peak, %s after teardown\n", k, HumanBytes(r.Memory.ChargedBytes[k]), HumanBytes(r.Memory.ChargedBytesEnd[k]))
	}
	fmt.Fprintf(w, "  teardown: %d S-EPT and %d control pages reclaimed, %d pages leaked%s\n",
		r.Teardown.SEPTPagesReclaimed, r.Teardown.ControlPagesReclaimed, r.Teardown.LeakedPages, onPurposeNote(r.Teardown.LeakedOnPurpose))
	if pr := r.Teardown.PrivateReclaimed; len(pr) > 0 {
		fmt.Fprintf(w, "  after KVM_TDX_TERMINATE_VM: private leaves reclaimed 4K %d, 2M %d, 1G %d (no BLOCK/TRACK/REMOVE)\n", pr["4K"], pr["2M"], pr["1G"])
	}
	fmt.Fprintln(w)
	names := make([]string, 0, len(r.MRTDs))
	for k := range r.MRTDs {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(w, "MRTD %s %s\n", k, r.MRTDs[k])
	}
	fmt.Fprintf(w, "checks: %d run, %d passed (evaluations of %d invariants, each after every step)\n", r.Checks.Run, r.Checks.Passed, len(r.Checks.Names))
	for _, e := range r.Expectations {
		mark := "ok"
		if !e.OK {
			mark = "FAILED"
		}
		fmt.Fprintf(w, "expect %s: %s (%s)\n", e.What, mark, e.Detail)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
	r.writeResponses(w)
	r.writeViolations(w)
	return nil
}

// writeResponses prints the outcome and the kernel's responses by kind.
func (r *Run) writeResponses(w io.Writer) {
	if r.Outcome == "" {
		return
	}
	note := ""
	if r.Outcome == "violation" && len(r.Checks.Failed) == 0 {
		note = " (step_completes: a step failed and no injected fault explains it)"
	}
	fmt.Fprintf(w, "outcome: %s%s\n", r.Outcome, note)
	for _, k := range slices.Sorted(maps.Keys(r.KernelResponses)) {
		kr := r.KernelResponses[k]
		reused := ""
		if kr.Reused != nil {
			reused = fmt.Sprintf(", %d pages reused", *kr.Reused)
		}
		fmt.Fprintf(w, "kernel response %s: %d%s\n", k, kr.Count, reused)
		for _, c := range slices.Sorted(maps.Keys(kr.Causes)) {
			fmt.Fprintf(w, "  %d  %s\n", kr.Causes[c], c)
		}
	}
}

func onPurposeNote(n int64) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d on purpose, after injected faults)", n)
}

// writeViolations prints the violations by invariant and the first
// TextViolations of them.
func (r *Run) writeViolations(w io.Writer) {
	n := max(r.ViolationsTotal, len(r.Violations))
	if n == 0 {
		fmt.Fprintln(w, "violations: none")
		return
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(r.Checks.Failed)) {
		parts = append(parts, fmt.Sprintf("%s in %d evaluations", k, r.Checks.Failed[k]))
	}
	fmt.Fprintf(w, "violations: %d (%s)\n", n, strings.Join(parts, ", "))
	shown := r.Violations[:min(len(r.Violations), TextViolations)]
	for _, v := range shown {
		fmt.Fprintf(w, "  %s\n", v)
	}
	if n > len(shown) {
		fmt.Fprintf(w, "  ... %d more (--json lists the first %d)\n", n-len(shown), MaxViolations)
	}
}

// writeFirmware lists, for each TD built from firmware, the sections the
// build phase loaded.
func (r *Run) writeFirmware(w io.Writer) {
	for _, td := range r.TDs {
		if len(td.FirmwareSections) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nBuild of %s from firmware %s (KVM_TDX_INIT_MEM_REGION per section, in this order)\n", td.Name, td.Firmware)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  #\ttype\tGPA\tsize\tattributes\tpages added\tpages measured")
		for _, s := range td.FirmwareSections {
			fmt.Fprintf(tw, "  %d\t%s\t%#x\t%s\t%s\t%d\t%d\n", s.Index, s.Type, s.GPA, HumanBytes(s.Size), s.Attributes, s.PagesAdded, s.PagesMeasured)
		}
		tw.Flush()
	}
}

func bugNote(why string) string {
	if why == "" {
		return ""
	}
	return " (KVM_BUG_ON: " + why + ")"
}

func sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

func failedNote(n uint64) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d non-success)", n)
}

// Duration formats modeled nanoseconds.
func Duration(ns uint64) string {
	switch {
	case ns >= 1e9:
		return fmt.Sprintf("%.3f s", float64(ns)/1e9)
	case ns >= 1e6:
		return fmt.Sprintf("%.3f ms", float64(ns)/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.1f us", float64(ns)/1e3)
	}
	return fmt.Sprintf("%d ns", ns)
}

// HumanBytes formats a byte count.
func HumanBytes(b uint64) string {
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

// byVCPUNote lists per-vCPU counts, " (td0/vcpu0 12, ...)", in key order.
func byVCPUNote(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
