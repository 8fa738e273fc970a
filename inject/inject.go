// Package inject is fault injection for runs and fuzz campaigns:
// TDX_OPERAND_BUSY at a chosen rate on any SEAMCALL leaf, the n-th
// call of a leaf failing outright (a faulty TDX module), and the n-th
// allocation from a cache or pool failing (a host out of memory in a
// top-up). Decisions depend only on the seed and on how many calls came
// before, so a deterministic run with injection replays exactly.
package inject

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// The injected faults, for errors.Is: an error that an injected fault
// caused wraps one of these, so a caller tells an injected failure from a
// real one without reading its text.
var (
	ErrBusy        = errors.New("injected TDX_OPERAND_BUSY")
	ErrLeafFailed  = errors.New("injected SEAMCALL failure")
	ErrAllocFailed = errors.New("injected allocation failure")
)

// Fault is one injected SEAMCALL failure: the leaf, the status it returns
// instead of running, and Err, ErrBusy or ErrLeafFailed.
type Fault struct {
	Leaf   tdxmodule.Leaf
	Status tdxmodule.Status
	Err    error
}

func (f *Fault) Error() string {
	return f.Err.Error() + ": " + f.Leaf.String() + " " + f.Status.String()
}

// Unwrap returns ErrBusy or ErrLeafFailed.
func (f *Fault) Unwrap() error { return f.Err }

// Failure makes the Nth call (from 1) of Leaf fail with Status; Every > 0
// repeats it every Every calls after that.
type Failure struct {
	Leaf   tdxmodule.Leaf
	Nth    uint64
	Every  uint64
	Status tdxmodule.Status
}

// AllocFailure makes the Nth allocation (from 1) from the hostmem source
// named Source fail ("" matches every source).
type AllocFailure struct {
	Source string
	Nth    uint64
}

// Config is what to inject.
type Config struct {
	Seed uint64
	// Busy is the probability that a SEAMCALL of BusyLeaves (every leaf
	// when empty) returns TDX_OPERAND_BUSY instead of running.
	Busy       float64
	BusyLeaves []tdxmodule.Leaf
	Fail       []Failure
	AllocFail  []AllocFailure
}

// Any reports whether c injects anything.
func (c Config) Any() bool { return c.Busy > 0 || len(c.Fail) > 0 || len(c.AllocFail) > 0 }

// Stats counts what was injected.
type Stats struct {
	Busy         uint64            `json:"busy"`
	Failed       map[string]uint64 `json:"failed"` // by "LEAF STATUS"
	AllocsFailed uint64            `json:"allocs_failed"`
	// BusyEndedByKick counts BUSYs not injected because the kernel had
	// kicked the TD's vCPUs out (tdh_do_no_vcpus): no contender left.
	BusyEndedByKick uint64 `json:"busy_ended_by_kick"`
}

// Injector carries out a Config. Its methods are safe for concurrent use.
type Injector struct {
	cfg Config

	mu     sync.Mutex
	calls  [64]uint64
	allocs map[string]uint64
	stats  Stats
	// noVCPUs counts, per TD (by TDR), the kernel's tdh_do_no_vcpus()
	// windows open: its vCPUs are kicked out and held out of the guest.
	noVCPUs map[addr.PFN]int
}

// NoVCPUs is told when the kernel opens (on) and closes a
// tdh_do_no_vcpus() retry window on the TD whose TDR is tdr. An injected
// TDX_OPERAND_BUSY models a contender on the S-EPT or the TD epoch: a
// vCPU inside the TD (TDH.VP.ENTER, TDG.MEM.PAGE.ACCEPT). Kicking every
// vCPU out and keeping them out ends that contention, so inside the
// window no BUSY is injected on that TD's S-EPT and TRACK leaves (the
// retry succeeds, as the kernel's comment says it does on hardware);
// other failures (fail with another status) still apply as module bugs.
// Kernel: tdh_do_no_vcpus(), arch/x86/kvm/vmx/tdx.c.
func (in *Injector) NoVCPUs(tdr addr.PFN, on bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if on {
		in.noVCPUs[tdr]++
	} else if in.noVCPUs[tdr]--; in.noVCPUs[tdr] <= 0 {
		delete(in.noVCPUs, tdr)
	}
}

// tdrOf is the TDR a leaf's registers name, for the leaves run through
// tdh_do_no_vcpus(): RCX for TDH.MEM.TRACK, RDX for the S-EPT leaves.
func tdrOf(leaf tdxmodule.Leaf, regs tdxmodule.Regs) (addr.PFN, bool) {
	switch leaf {
	case tdxmodule.LeafMemTrack:
		return addr.PFN(regs.RCX >> 12), true
	case tdxmodule.LeafMemRangeBlock, tdxmodule.LeafMemPageRemove, tdxmodule.LeafMemPageDemote:
		return addr.PFN(regs.RDX >> 12), true
	}
	return 0, false
}

// New returns an injector for cfg.
func New(cfg Config) *Injector {
	return &Injector{cfg: cfg, allocs: map[string]uint64{}, stats: Stats{Failed: map[string]uint64{}}, noVCPUs: map[addr.PFN]int{}}
}

// SEAMCALL is a tdxmodule.Injector: it decides whether this call of leaf
// fails and with which status.
func (in *Injector) SEAMCALL(leaf tdxmodule.Leaf, regs tdxmodule.Regs) (tdxmodule.Status, bool) {
	if f := in.Decide(leaf, regs); f != nil {
		return f.Status, true
	}
	return 0, false
}

// Decide decides whether this call of leaf fails: nil lets it run, a
// *Fault says with which status and why.
func (in *Injector) Decide(leaf tdxmodule.Leaf, regs tdxmodule.Regs) *Fault {
	in.mu.Lock()
	defer in.mu.Unlock()
	if int(leaf) >= len(in.calls) {
		return nil
	}
	in.calls[leaf]++
	k := in.calls[leaf]
	noContender := false
	if tdr, ok := tdrOf(leaf, regs); ok && in.noVCPUs[tdr] > 0 {
		noContender = true
	}
	for _, f := range in.cfg.Fail {
		if f.Leaf == leaf && (k == f.Nth || f.Every > 0 && k > f.Nth && (k-f.Nth)%f.Every == 0) {
			if noContender && f.Status.HasCode(tdxmodule.OperandBusy) {
				in.stats.BusyEndedByKick++
				continue
			}
			name, _, _ := strings.Cut(f.Status.String(), "(") // without the operand
			in.stats.Failed[leaf.String()+" "+name]++
			return &Fault{Leaf: leaf, Status: f.Status, Err: ErrLeafFailed}
		}
	}
	if in.cfg.Busy > 0 && (len(in.cfg.BusyLeaves) == 0 || slices.Contains(in.cfg.BusyLeaves, leaf)) &&
		chance(in.cfg.Seed, uint64(leaf), k) < in.cfg.Busy {
		if noContender {
			in.stats.BusyEndedByKick++
			return nil
		}
		in.stats.Busy++
		return &Fault{Leaf: leaf, Status: tdxmodule.OperandBusy, Err: ErrBusy}
	}
	return nil
}

// Alloc is a hostmem alloc failer: ErrAllocFailed when this allocation
// fails, nil otherwise.
func (in *Injector) Alloc(source string, _ addr.Order) error {
	if len(in.cfg.AllocFail) == 0 {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.allocs[source]++
	in.allocs[""]++
	for _, f := range in.cfg.AllocFail {
		if in.allocs[f.Source] == f.Nth && (f.Source == "" || f.Source == source) {
			in.stats.AllocsFailed++
			return ErrAllocFailed
		}
	}
	return nil
}

// Stats returns what was injected so far.
func (in *Injector) Stats() Stats {
	in.mu.Lock()
	defer in.mu.Unlock()
	s := in.stats
	s.Failed = map[string]uint64{}
	for k, v := range in.stats.Failed {
		s.Failed[k] = v
	}
	return s
}

// chance is a deterministic number in [0, 1) for call k of leaf: the
// splitmix64 finalizer over the three, so neighbouring calls are
// independent.
func chance(seed, leaf, k uint64) float64 {
	x := seed*0x9e3779b97f4a7c15 ^ leaf<<48 ^ k
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}

// ParseLeaf reads a SEAMCALL leaf name ("TDH.MEM.PAGE.REMOVE").
func ParseLeaf(name string) (tdxmodule.Leaf, error) {
	for _, l := range tdxmodule.Leaves() {
		if l.String() == name {
			return l, nil
		}
	}
	return 0, fmt.Errorf("unknown SEAMCALL leaf %q", name)
}

// ParseStatus reads a status by name ("TDX_OPERAND_INVALID") or number.
func ParseStatus(s string) (tdxmodule.Status, error) {
	if v, err := strconv.ParseUint(s, 0, 64); err == nil {
		return tdxmodule.Status(v), nil
	}
	if st, ok := tdxmodule.StatusByName("TDX_" + strings.TrimPrefix(s, "TDX_")); ok {
		return st, nil
	}
	return 0, fmt.Errorf("unknown TDX status %q", s)
}

// AllocSources are the hostmem sources an alloc failure may name: the
// buddy allocator and hugetlb pools (hostmem), KVM's MMU caches
// (kvm/mmu) and the Dynamic PAMT page cache (kvm/tdx). The static PAMT
// ("tdx-pamt") is reserved when the module initializes, before a run's
// injector is attached, so naming it would never fire and is refused.
// TestAllocSourcesAreRegistered keeps the list true.
var AllocSources = []string{
	"buddy", "hugetlb-2M", "hugetlb-1G",
	"kvm.mmu_shadow_page_cache", "kvm.mmu_external_spt_cache",
	"tdx.dpamt",
}
