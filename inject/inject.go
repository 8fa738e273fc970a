// Package inject is fault injection for runs and fuzz campaigns:
// TDX_OPERAND_BUSY at a chosen rate on the SEAMCALL leaves where a
// contender can hold a lock they need (contenders.go), the n-th
// call of a leaf failing outright (a faulty TDX module), and the n-th
// allocation from a cache or pool failing (a host out of memory in a
// top-up). Decisions depend only on the seed and on how many calls came
// before, so a deterministic run with injection replays exactly.
package inject

import (
	"errors"
	"fmt"
	"maps"
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
// instead of running, and Err, ErrBusy or ErrLeafFailed. A BUSY from the
// busy rate names the Contender it models; a BUSY from `fail` names none
// (it is the scenario's, and a module bug where no contender can exist).
type Fault struct {
	Leaf      tdxmodule.Leaf
	Status    tdxmodule.Status
	Err       error
	Contender Contender
}

func (f *Fault) Error() string {
	s := f.Err.Error() + ": " + f.Leaf.String() + " " + f.Status.String()
	if f.Contender != 0 {
		s += " (contender: " + f.Contender.String() + ")"
	}
	return s
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
	// when empty) returns TDX_OPERAND_BUSY instead of running, where a
	// contender can hold a lock it needs (ContentionOf); elsewhere the
	// rate injects nothing.
	Busy       float64
	BusyLeaves []tdxmodule.Leaf
	Fail       []Failure
	AllocFail  []AllocFailure
}

// Any reports whether c injects anything.
func (c Config) Any() bool { return c.Busy > 0 || len(c.Fail) > 0 || len(c.AllocFail) > 0 }

// Stats counts what was injected.
type Stats struct {
	// Busy counts the BUSYs of the busy rate, BusyByContender the same by
	// contender kind ("vcpu", "host_seamcall", "epoch").
	Busy            uint64            `json:"busy"`
	BusyByContender map[string]uint64 `json:"busy_by_contender"`
	Failed          map[string]uint64 `json:"failed"` // by "LEAF STATUS"
	AllocsFailed    uint64            `json:"allocs_failed"`
	// BusyEndedByKick counts BUSYs not injected because the kernel had
	// kicked the TD's vCPUs out (tdh_do_no_vcpus): no contender left.
	BusyEndedByKick uint64 `json:"busy_ended_by_kick"`
	// BusyEndedByRetry counts BUSYs not injected because the call is the
	// kernel's retry of one the rate made BUSY: the contender's SEAMCALL
	// (or vCPU entry) has returned and its lock is free.
	BusyEndedByRetry uint64 `json:"busy_ended_by_retry"`
	// BusyNoContender counts draws of the rate on a leaf, or in a context
	// (a TD not yet RUNNABLE), where no contender can exist: nothing is
	// injected, the real module cannot return BUSY there.
	BusyNoContender uint64 `json:"busy_no_contender"`
	// BusyModuleBug counts `fail` injections of TDX_OPERAND_BUSY where no
	// contender can exist: a module bug, not contention (also in Failed).
	BusyModuleBug uint64 `json:"busy_module_bug"`
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
	// recent are the last calls the rate made BUSY, so that the kernel's
	// retry of one finds the contender gone (bounded: a ring).
	recent     [32]busyCall
	recentNext int
	// runnable, when set, says whether the TD whose TDR is tdr is
	// RUNNABLE (SetRunnable).
	runnable func(tdr addr.PFN) bool
}

// busyCall is one call the rate made BUSY: its leaf and operands.
type busyCall struct {
	leaf     tdxmodule.Leaf
	rcx, rdx uint64
	used     bool
}

// SetRunnable tells the injector how to learn whether a TD is RUNNABLE:
// before TDH.MR.FINALIZE no vCPU has entered and the kernel serializes
// every SEAMCALL on the TD, so the contenders of RunnableOnly leaves do
// not exist. Without it every TD counts as RUNNABLE.
func (in *Injector) SetRunnable(f func(tdr addr.PFN) bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.runnable = f
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

// tdrOf is the TDR a leaf's registers name: RCX for TDH.MEM.TRACK and
// TDH.MR.FINALIZE, RDX for the S-EPT and measurement leaves.
func tdrOf(leaf tdxmodule.Leaf, regs tdxmodule.Regs) (addr.PFN, bool) {
	switch leaf {
	case tdxmodule.LeafMemTrack, tdxmodule.LeafMrFinalize:
		return addr.PFN(regs.RCX >> 12), true
	case tdxmodule.LeafMemRangeBlock, tdxmodule.LeafMemPageRemove, tdxmodule.LeafMemPageDemote,
		tdxmodule.LeafMemPageAug, tdxmodule.LeafMemSEPTAdd, tdxmodule.LeafMemPageAdd, tdxmodule.LeafMrExtend,
		tdxmodule.LeafMemSEPTRemove, tdxmodule.LeafMemRangeUnblock, tdxmodule.LeafMemPagePromote, tdxmodule.LeafMemSEPTRd:
		return addr.PFN(regs.RDX >> 12), true
	}
	return 0, false
}

// New returns an injector for cfg.
func New(cfg Config) *Injector {
	return &Injector{cfg: cfg, allocs: map[string]uint64{},
		stats:   Stats{Failed: map[string]uint64{}, BusyByContender: map[string]uint64{}},
		noVCPUs: map[addr.PFN]int{}}
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
//
// A `fail` entry fires on its call whatever the context, except a BUSY
// inside the kernel's tdh_do_no_vcpus() window on a leaf whose contenders
// are vCPUs (the kick ended them); a BUSY where no contender can exist is
// counted as a module bug. The busy rate injects a BUSY only where
// ContentionOf names a contender that can exist now: the TD is RUNNABLE
// for RunnableOnly leaves, the vCPUs are not kicked out for vCPU and
// epoch contenders, and the call is not the kernel's retry of a call the
// rate made BUSY (the contender has returned).
func (in *Injector) Decide(leaf tdxmodule.Leaf, regs tdxmodule.Regs) *Fault {
	in.mu.Lock()
	defer in.mu.Unlock()
	if int(leaf) >= len(in.calls) {
		return nil
	}
	in.calls[leaf]++
	k := in.calls[leaf]
	c := ContentionOf(leaf)
	for _, f := range in.cfg.Fail {
		if f.Leaf == leaf && (k == f.Nth || f.Every > 0 && k > f.Nth && (k-f.Nth)%f.Every == 0) {
			busy := f.Status.HasCode(tdxmodule.OperandBusy)
			var kinds []Contender
			kicked := false
			if busy {
				kinds, kicked = in.contenders(c, leaf, regs)
			}
			if busy && kicked {
				in.stats.BusyEndedByKick++
				continue
			}
			if busy && len(kinds) == 0 {
				in.stats.BusyModuleBug++
			}
			name, _, _ := strings.Cut(f.Status.String(), "(") // without the operand
			in.stats.Failed[leaf.String()+" "+name]++
			return &Fault{Leaf: leaf, Status: f.Status, Err: ErrLeafFailed}
		}
	}
	if in.cfg.Busy <= 0 || len(in.cfg.BusyLeaves) > 0 && !slices.Contains(in.cfg.BusyLeaves, leaf) {
		return nil
	}
	retry := in.takeRecent(leaf, regs)
	if chance(in.cfg.Seed, uint64(leaf), k) >= in.cfg.Busy {
		return nil
	}
	kinds, kicked := in.contenders(c, leaf, regs)
	switch {
	case kicked && len(kinds) == 0:
		in.stats.BusyEndedByKick++
		return nil
	case len(kinds) == 0:
		in.stats.BusyNoContender++
		return nil
	case retry:
		in.stats.BusyEndedByRetry++
		return nil
	}
	i := int(chance(in.cfg.Seed^0x636f6e74656e64, uint64(leaf), k) * float64(len(kinds)))
	kind := kinds[i]
	in.remember(leaf, regs)
	in.stats.Busy++
	in.stats.BusyByContender[kind.String()]++
	return &Fault{Leaf: leaf, Status: tdxmodule.OperandBusy.With(operandOf(c, kind)), Err: ErrBusy, Contender: kind}
}

// contenders returns the contender kinds of c that can exist for this
// call, and whether vCPU contenders were ended by a kick (the call is
// inside a tdh_do_no_vcpus() window on its TD and the leaf has them).
func (in *Injector) contenders(c Contention, leaf tdxmodule.Leaf, regs tdxmodule.Regs) ([]Contender, bool) {
	if !c.Possible() {
		return nil, false
	}
	tdr, hasTDR := tdrOf(leaf, regs)
	if c.RunnableOnly && hasTDR && in.runnable != nil && !in.runnable(tdr) {
		return nil, false
	}
	if !hasTDR || in.noVCPUs[tdr] == 0 {
		return c.Kinds, false
	}
	var left []Contender
	kicked := false
	for _, kd := range c.Kinds {
		if kd.viaVCPU() {
			kicked = true
		} else {
			left = append(left, kd)
		}
	}
	return left, kicked
}

// operandOf is the operand id of the BUSY contender kind causes on c.
func operandOf(c Contention, kind Contender) uint32 {
	for i, kd := range c.Kinds {
		if kd == kind && i < len(c.Operands) {
			return c.Operands[i]
		}
	}
	return tdxmodule.OpRCX
}

// remember records a call the rate made BUSY.
func (in *Injector) remember(leaf tdxmodule.Leaf, regs tdxmodule.Regs) {
	in.recent[in.recentNext] = busyCall{leaf: leaf, rcx: regs.RCX, rdx: regs.RDX, used: true}
	in.recentNext = (in.recentNext + 1) % len(in.recent)
}

// takeRecent reports whether this call repeats one the rate made BUSY
// (the kernel's retry), and forgets that one.
func (in *Injector) takeRecent(leaf tdxmodule.Leaf, regs tdxmodule.Regs) bool {
	for i := range in.recent {
		if b := &in.recent[i]; b.used && b.leaf == leaf && b.rcx == regs.RCX && b.rdx == regs.RDX {
			b.used = false
			return true
		}
	}
	return false
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
	s.Failed = maps.Clone(in.stats.Failed)
	s.BusyByContender = maps.Clone(in.stats.BusyByContender)
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
