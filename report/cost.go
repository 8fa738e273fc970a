package report

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/tdxsim/tdxsim/event"
)

// Cost is the modeled latency of one call, with where the figure comes
// from.
type Cost struct {
	NS     uint64 `json:"ns" yaml:"ns"`
	Source string `json:"source" yaml:"source"`
}

// CostTable maps a SEAMCALL or TDCALL leaf name to its modeled latency.
// Leaves whose RCX carries a page level (PAGE.AUG, PAGE.REMOVE,
// RANGE.BLOCK, PAGE.DEMOTE, TDG.MEM.PAGE.ACCEPT) may have entries per
// level, "LEAF/2M" and "LEAF/1G", which win over the plain name. A leaf
// with no entry costs "default".
type CostTable map[string]Cost

// The published anchors the defaults are calibrated to (docs/cost-model.md). There are no public
// per-leaf SEAMCALL cycle counts; every per-leaf figure below is either a
// share of the one measured whole (a 4 KiB private fault) or an assumption
// that says so.
const (
	srcFault = "calibrated: share of the ~8 us 4 KiB private fault (TD exit, AUG, accept, re-entry) measured on Granite Rapids, Dstack PR #1220 (github.com/Dstack-TEE/dstack/pull/1220)"
	srcZero  = "computed: the 4 KiB accept's zeroing scaled by 512 per level (TDG.MEM.PAGE.ACCEPT clears the whole page, tdg_mem_page_accept.c); assumes no other per-level cost"
	srcAssum = "assumed: no published per-leaf figure exists; set relative to PAGE.AUG by the work the leaf does in the TDX-module source"
	srcOnce  = "assumed: one-time TD setup/teardown leaf; no published figure; only the build and teardown phases see it"
	srcFlush = "assumed: writes back and invalidates the whole cache of a package (WBINVD); order of a millisecond on large-LLC servers, no published TDX figure"
)

// DefaultCosts returns the default latency table. The 4 KiB private fault
// the Dstack measurement saw is, in the model, TDG.MEM.PAGE.ACCEPT (EPT
// violation exit) + TDH.VP.ENTER (the exit/re-entry round trip, including
// KVM's fault handling) + TDH.MEM.PAGE.AUG + TDG.MEM.PAGE.ACCEPT (success,
// zeroes the page): 1,250 + 3,000 + 2,500 + 1,250 = 8,000 ns.
func DefaultCosts() CostTable {
	return CostTable{
		"TDH.VP.ENTER":            {3000, srcFault + "; the TD exit and re-entry round trip, including KVM's EPT-violation handling"},
		"TDH.MEM.PAGE.AUG":        {2500, srcFault},
		"TDH.MEM.PAGE.AUG/2M":     {2500, "assumed equal to 4K: AUG of a 2 MiB leaf writes one S-EPT entry and one PAMT entry and does not touch the page (tdh_mem_page_aug.c)"},
		"TDH.MEM.PAGE.AUG/1G":     {2500, "assumed equal to 4K: as for 2M"},
		"TDG.MEM.PAGE.ACCEPT":     {1250, srcFault + "; each of the two ACCEPT TDCALLs of a lazy 4 KiB accept"},
		"TDG.MEM.PAGE.ACCEPT/2M":  {1250 * 512, srcZero},
		"TDG.MEM.PAGE.ACCEPT/1G":  {1250 * 512 * 512, srcZero},
		"TDH.MEM.SEPT.ADD":        {2500, srcAssum + ": like AUG, one entry written plus a page initialised"},
		"TDH.MEM.PAGE.ADD":        {3000, srcAssum + ": AUG plus a 4 KiB copy and one SHA-384 block into MRTD"},
		"TDH.MR.EXTEND":           {1000, srcAssum + ": three SHA-384 blocks over 256 bytes"},
		"TDH.MEM.PAGE.REMOVE":     {2000, srcAssum},
		"TDH.MEM.RANGE.BLOCK":     {1000, srcAssum + ": one entry's state changed"},
		"TDH.MEM.RANGE.UNBLOCK":   {1000, srcAssum},
		"TDH.MEM.TRACK":           {1000, srcAssum + ": one epoch increment"},
		"TDH.MEM.PAGE.DEMOTE":     {5000, srcAssum + ": a new S-EPT page of 512 entries written"},
		"TDH.MEM.PAGE.PROMOTE":    {5000, srcAssum},
		"TDH.MEM.SEPT.REMOVE":     {2000, srcAssum},
		"TDH.PHYMEM.PAGE.WBINVD":  {500, srcAssum + ": 64 cache lines written back"},
		"TDH.PHYMEM.PAGE.RECLAIM": {1000, srcAssum + ": one PAMT entry returned to NDA, a private leaf of any size under teardown=terminate_vm (docs/cost-model.md compares both teardowns with the one published whole-teardown figure)"},
		"TDH.PHYMEM.PAMT.ADD":     {1000, srcAssum + ": a PAMT page pair installed (DPAMT v3)"},
		"TDH.PHYMEM.PAMT.REMOVE":  {1000, srcAssum},
		"TDH.PHYMEM.CACHE.WB":     {1_000_000, srcFlush},
		"default":                 {5000, srcOnce},
	}
}

// Validate checks a table: known shape of names, non-zero costs.
func (c CostTable) Validate() error {
	for _, k := range slices.Sorted(maps.Keys(c)) {
		if k == "default" {
			continue
		}
		name, lvl, _ := strings.Cut(k, "/")
		if !strings.HasPrefix(name, "TDH.") && !strings.HasPrefix(name, "TDG.") {
			return fmt.Errorf("%q: not a SEAMCALL (TDH.*) or TDCALL (TDG.*) leaf name", k)
		}
		if lvl != "" && lvl != "2M" && lvl != "1G" {
			return fmt.Errorf("%q: a level suffix is /2M or /1G", k)
		}
	}
	return nil
}

// With returns c with over's entries replacing or adding to it.
func (c CostTable) With(over map[string]uint64) CostTable {
	out := maps.Clone(c)
	for k, ns := range over {
		out[k] = Cost{NS: ns, Source: "scenario file"}
	}
	return out
}

// levelLeaves are the leaves whose RCX low bits carry a page level.
var levelLeaves = map[string]bool{"TDH.MEM.PAGE.AUG": true, "TDH.MEM.PAGE.REMOVE": true, "TDH.MEM.RANGE.BLOCK": true,
	"TDH.MEM.PAGE.DEMOTE": true, "TDG.MEM.PAGE.ACCEPT": true}

// Of returns the modeled latency of one SEAMCALL or TDCALL event. The
// per-level figures apply to calls that succeeded: an ACCEPT that exits
// with an EPT violation, or a leaf that fails its checks, did not do the
// level's work.
func (c CostTable) Of(e event.Event) uint64 {
	done := e.Status == 0 && (e.Kind != event.KindTdcall || e.Detail == "")
	if levelLeaves[e.Name] && done {
		switch e.Args[0] & 7 {
		case 1:
			if v, ok := c[e.Name+"/2M"]; ok {
				return v.NS
			}
		case 2:
			if v, ok := c[e.Name+"/1G"]; ok {
				return v.NS
			}
		}
	}
	if v, ok := c[e.Name]; ok {
		return v.NS
	}
	return c["default"].NS
}

// Phase is the modeled time of one part of a run.
type Phase struct {
	Name      string `json:"name"`
	ModeledNS uint64 `json:"modeled_ns"`
	Seamcalls uint64 `json:"seamcalls"`
}

// Clock is an event sink that models time: every SEAMCALL and TDCALL
// costs its table latency on the simulated thread that made it. Threads
// run on their own CPUs, so a phase lasts as long as its busiest thread
// (plus any idle time the scenario adds); lock waits are not modeled.
// It also counts page-cache top-ups (the mmu "cache_topup" events).
type Clock struct {
	costs CostTable

	mu       sync.Mutex
	names    map[int32]string
	phase    *Phase
	inPhase  map[int32]uint64
	idle     uint64
	phases   []Phase
	byThread map[string]uint64
	byLeaf   map[string]uint64
	topUps   map[string]uint64
	memo     *[2][64][2][8]costMemo // Of's answers, under mu
}

// costMemo is one remembered CostTable.Of answer: Of reads an event's
// name, whether it completed, and the level bits of its first operand;
// the memo is indexed by kind, leaf number, completion and those bits and
// holds the name it was computed for, so an event of another name misses.
type costMemo struct {
	name string
	ns   uint64
}

// cost is c.costs.Of(e), remembered per leaf: on every SEAMCALL, Of's
// string lookups (and the "/2M" concatenation) cost more than the rest of
// the clock. Call with mu held.
func (c *Clock) cost(e event.Event) uint64 {
	if e.Leaf >= 64 {
		return c.costs.Of(e)
	}
	kind := 0
	if e.Kind == event.KindTdcall {
		kind = 1
	}
	done := 0
	if e.Status == 0 && (e.Kind != event.KindTdcall || e.Detail == "") {
		done = 1
	}
	if c.memo == nil {
		c.memo = new([2][64][2][8]costMemo)
	}
	m := &c.memo[kind][e.Leaf][done][e.Args[0]&7]
	if m.name != e.Name || m.name == "" {
		*m = costMemo{name: e.Name, ns: c.costs.Of(e)}
	}
	return m.ns
}

// NewClock returns a clock using costs.
func NewClock(costs CostTable) *Clock {
	return &Clock{costs: costs, names: map[int32]string{}, inPhase: map[int32]uint64{},
		byThread: map[string]uint64{}, byLeaf: map[string]uint64{}, topUps: map[string]uint64{}}
}

// Name names a simulated thread (vCPU threads by TD and index) for the
// per-thread totals.
func (c *Clock) Name(id int32, name string) {
	c.mu.Lock()
	c.names[id] = name
	c.mu.Unlock()
}

// Emit charges SEAMCALLs and TDCALLs to their thread and phase.
func (c *Clock) Emit(e event.Event) {
	switch {
	case e.Kind == event.KindSeamcall || e.Kind == event.KindTdcall:
	case e.Kind == event.KindMMU && e.Name == "cache_topup":
		c.mu.Lock()
		c.topUps[e.Detail]++
		c.mu.Unlock()
		return
	default:
		return
	}
	c.mu.Lock()
	ns := c.cost(e)
	c.inPhase[e.Thread] += ns
	name, ok := c.names[e.Thread]
	if !ok {
		name = fmt.Sprintf("thread%d", e.Thread)
	}
	c.byThread[name] += ns
	c.byLeaf[e.Name] += ns
	if c.phase != nil && e.Kind == event.KindSeamcall {
		c.phase.Seamcalls++
	}
	c.mu.Unlock()
}

// Begin starts a phase (ending the one running).
func (c *Clock) Begin(name string) {
	c.End()
	c.mu.Lock()
	c.phase = &Phase{Name: name}
	c.mu.Unlock()
}

// Idle adds ns of idle time to the running phase.
func (c *Clock) Idle(ns uint64) {
	c.mu.Lock()
	c.idle += ns
	c.mu.Unlock()
}

// End closes the running phase, if any.
func (c *Clock) End() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.phase == nil {
		return
	}
	var busiest uint64
	for _, ns := range c.inPhase {
		busiest = max(busiest, ns)
	}
	c.phase.ModeledNS = busiest + c.idle
	c.phases = append(c.phases, *c.phase)
	c.phase, c.idle = nil, 0
	clear(c.inPhase)
}

// Phases returns the closed phases in order.
func (c *Clock) Phases() []Phase {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Phase(nil), c.phases...)
}

// ByThread returns modeled time per named thread.
func (c *Clock) ByThread() map[string]uint64 { return c.copy(c.byThread) }

// ByLeaf returns modeled time per leaf.
func (c *Clock) ByLeaf() map[string]uint64 { return c.copy(c.byLeaf) }

// TopUps returns page-cache top-ups by cache name.
func (c *Clock) TopUps() map[string]uint64 { return c.copy(c.topUps) }

func (c *Clock) copy(m map[string]uint64) map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(m)
}

// WriteText prints the table, one leaf per line with its source.
func (c CostTable) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "leaf\tns\tsource")
	for _, k := range slices.Sorted(maps.Keys(c)) {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", k, c[k].NS, c[k].Source)
	}
	return tw.Flush()
}
