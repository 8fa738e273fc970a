package check

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/inject"
)

// Responses is an event sink that traces the kernel's responses (a
// KVM_BUG_ON, a WARN, a leaked page or HKID, guest_memfd freeing a page a
// dead TD still maps) back to the injected fault that caused them.
//
// A response is traced to a fault in one of three ways, in this order:
// the last SEAMCALL that failed on the responding thread (and was not
// retried to success since) was injected (tdxmodule marks its event
// " (injected)"); the response is on a VM that an injected fault already
// killed (KVM_BUG_ON), so it is what the kernel's teardown of a dead VM
// does; or the thread already answered an injected fault and has had no
// fault of its own since (the WARNs of tdx_mmu_release_hkid() and of the
// reclaims that follow it carry no VM). A response with none of these is
// uncaused: the finding it reports stays a violation.
type Responses struct {
	mu      sync.Mutex
	threads map[int32]*threadCause
	deadBy  map[uint64]string // VM id -> the fault that killed it
	bugs    map[uint64]string // VM id -> the fault of its KVM_BUG_ON ("" uncaused)
	list    []Response
	faults  map[string]bool // "LEAF STATUS" of every injected fault seen
	// lastFail says, by leaf, whether its last failure was injected.
	lastFail map[string]bool
	excused  map[eventKey]bool
	// pending counts the threads whose last SEAMCALL failed: a success
	// on a thread looks its state up only then.
	pending atomic.Int32
	// watch holds the pages of open guest_memfd windows, until the
	// module lets go of them (reclaim) or the host frees them.
	watching atomic.Int32
	watch    map[addr.PFN]bool
	opened   int64
	reused   int64
	// firstDeath is the fault that first killed a VM ("" none).
	firstDeath string
}

type threadCause struct {
	// last is "LEAF STATUS" of the thread's last failed SEAMCALL, until
	// the same leaf succeeds on the thread (it was retried).
	last     string
	leaf     string
	injected bool
	// prev is the failure last replaced when another leaf failed while
	// the kernel was still answering it (a BUSY PAMT.REMOVE retried in
	// the clean-up after a failed TDH.MNG.CREATE); it comes back when
	// that other leaf is retried to success.
	prev failedCall
	// inherited is the fault this thread last answered, and inheritedVM
	// the VM it was on (0: not known).
	inherited   string
	inheritedVM uint64
}

// failedCall is one remembered SEAMCALL failure of a thread.
type failedCall struct {
	last, leaf string
	injected   bool
}

type eventKey struct {
	step         uint64
	thread       int32
	name, detail string
}

// NewResponses returns an empty tracker.
func NewResponses() *Responses {
	return &Responses{threads: map[int32]*threadCause{}, deadBy: map[uint64]string{}, bugs: map[uint64]string{},
		faults: map[string]bool{}, lastFail: map[string]bool{}, excused: map[eventKey]bool{}, watch: map[addr.PFN]bool{}}
}

// faultName is "LEAF STATUS" without the operand: how inject names a
// failed leaf ("TDH.MEM.PAGE.REMOVE TDX_OPERAND_BUSY").
func faultName(e event.Event) (string, bool) {
	detail, _, injected := strings.Cut(e.Detail, " (injected") // "(injected)", or with what injected it
	st, _, _ := strings.Cut(detail, "(")
	return e.Name + " " + strings.TrimSpace(st), injected
}

// Emit reads one event.
func (r *Responses) Emit(e event.Event) {
	switch e.Kind {
	case event.KindSeamcall:
		r.seamcall(e)
	case event.KindKVM:
		if e.Name == "KVM_BUG_ON" {
			r.mu.Lock()
			c := r.respond(e, e.Args[2], true, RespKVMBugOn, bugKernel(e.Detail), namedLeaf(e.Detail, " failed"))
			r.bugs[e.Args[2]] = c
			if c != "" {
				r.deadBy[e.Args[2]] = c
				if r.firstDeath == "" {
					r.firstDeath = c
				}
			}
			r.mu.Unlock()
		}
	case event.KindTDX:
		r.tdx(e)
	case event.KindMMU:
		if e.Name == "leak_external_spt" {
			r.mu.Lock()
			r.respond(e, 0, false, RespPagesLeaked, "tdx_sept_free_private_spt() (handle_removed_pt() leaks sp->external_spt)", "")
			r.mu.Unlock()
		}
	case event.KindViolation:
		switch e.Name {
		case hostmem.RuleFreeTDXOwned:
			r.gmemWindow(e, "kvm_gmem_punch_hole() / kvm_gmem_release() (no pin after KVM_BUG_ON)")
		case hostmem.RuleSplitMappedHuge:
			// The same window for a huge leaf the failed removal left:
			// guest_memfd splits the folio under it before freeing part.
			r.gmemWindow(e, "kvm_gmem_punch_hole() / in-place conversion splitting a folio a dead TD's S-EPT still maps at 2M (no pin after KVM_BUG_ON)")
		}
	case event.KindAlloc, event.KindFree:
		if r.watching.Load() > 0 {
			r.watched(e)
		}
	}
}

func (r *Responses) seamcall(e event.Event) {
	if e.Status == 0 {
		if r.watching.Load() > 0 && e.Name == "TDH.PHYMEM.PAGE.RECLAIM" {
			r.mu.Lock()
			r.unwatch(addr.HPA(e.Args[0]).PFN())
			r.mu.Unlock()
		}
		if r.pending.Load() == 0 {
			return // the fast path: no failure waits to be retried
		}
		r.mu.Lock()
		if tc := r.threads[e.Thread]; tc != nil && tc.leaf == e.Name { // retried to success
			if tc.prev.leaf != "" {
				tc.last, tc.leaf, tc.injected, tc.prev = tc.prev.last, tc.prev.leaf, tc.prev.injected, failedCall{}
			} else {
				tc.last, tc.leaf, tc.injected = "", "", false
				r.pending.Add(-1)
			}
		}
		r.mu.Unlock()
		return
	}
	name, injected := faultName(e)
	r.mu.Lock()
	tc := r.thread(e.Thread)
	switch {
	case tc.leaf == "":
		r.pending.Add(1)
	case tc.leaf != e.Name:
		tc.prev = failedCall{tc.last, tc.leaf, tc.injected}
	}
	tc.last, tc.leaf, tc.injected = name, e.Name, injected
	r.lastFail[e.Name] = injected
	if injected {
		r.faults[name] = true
	}
	r.mu.Unlock()
}

func (r *Responses) thread(id int32) *threadCause {
	tc := r.threads[id]
	if tc == nil {
		tc = &threadCause{}
		r.threads[id] = tc
	}
	return tc
}

// hkidRelease are the leaves whose failure tdx_mmu_release_hkid() answers
// by leaking the HKID: its hkid_leaked event is the response, the WARN
// before it part of it.
var hkidRelease = map[string]bool{"TDH.VP.FLUSH": true, "TDH.MNG.VPFLUSHDONE": true, "TDH.PHYMEM.CACHE.WB": true, "TDH.MNG.KEY.FREEID": true}

func (r *Responses) tdx(e event.Event) {
	switch e.Name {
	case "WARN":
		what, _, _ := strings.Cut(e.Detail, " failed for ")
		r.mu.Lock()
		defer r.mu.Unlock()
		switch {
		case hkidRelease[what]:
			// answered by the hkid_leaked event that follows
		case what == "TDH.PHYMEM.PAGE.RECLAIM":
			r.respond(e, 0, false, RespPagesLeaked, "tdx_reclaim_page()", what)
		case what == "reclaim with HKID assigned":
			r.respond(e, 0, false, RespPagesLeaked, "tdx_reclaim_td_control_pages() (HKID still assigned)", "")
		default:
			r.respond(e, 0, false, RespWarn, "WARN_ON_ONCE() in "+leafOr(what), namedLeaf(what, ""))
		}
	case "hkid_leaked":
		r.mu.Lock()
		r.respond(e, e.Args[2], true, RespHKIDLeaked, "tdx_mmu_release_hkid() ("+e.Detail+")", e.Detail)
		r.mu.Unlock()
	}
}

// namedLeaf is the SEAMCALL leaf text starts with, up to sep ("" none).
func namedLeaf(text, sep string) string {
	leaf := text
	if sep != "" {
		leaf, _, _ = strings.Cut(text, sep)
	}
	if _, ok := leafKernel[leaf]; ok {
		return leaf
	}
	return ""
}

func leafOr(what string) string {
	if fn, ok := leafKernel[what]; ok {
		return fn + " (" + what + ")"
	}
	if strings.HasPrefix(what, "tdx_") {
		return what + "()"
	}
	return what
}

// respond records a response to e and returns the fault it traced ("" none).
// r.mu held.
//
// named is the leaf the response names as the one that failed ("" none):
// an injected failure of another leaf does not explain it.
func (r *Responses) respond(e event.Event, vm uint64, vmKnown bool, kind, kernel, named string) string {
	tc := r.thread(e.Thread)
	cause := ""
	switch {
	case tc.injected && tc.last != "" && (named == "" || named == tc.leaf):
		cause = tc.last
	case tc.prev.injected && named != "" && named == tc.prev.leaf:
		cause = tc.prev.last
	case vmKnown && r.deadBy[vm] != "":
		cause = r.deadBy[vm]
	case kind == RespKVMBugOn && tc.inherited != "" && tc.inheritedVM == vm:
		cause = tc.inherited // e.g. "HKID still assigned" after the HKID leaked
	case kind != RespKVMBugOn && tc.inherited != "":
		cause = tc.inherited
	}
	if cause != "" {
		tc.inherited = cause
		if vmKnown {
			tc.inheritedVM = vm
		}
	}
	r.list = append(r.list, Response{Kind: kind, Kernel: kernel, Fault: cause})
	return cause
}

// gmemWindow is guest_memfd freeing a page the TDX module still assigns:
// the kernel's answer when an injected fault killed a TD before its
// S-EPT let go of the page; a violation otherwise.
func (r *Responses) gmemWindow(e event.Event, kernel string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	tc := r.thread(e.Thread)
	cause := r.firstDeath
	if tc.inherited != "" {
		cause = tc.inherited
	}
	if cause == "" {
		return // no TD died of an injected fault: no_use_after_free
	}
	r.excused[eventKey{e.Step, e.Thread, e.Name, e.Detail}] = true
	r.list = append(r.list, Response{Kind: RespGmemFreedMapped, Kernel: kernel, Fault: cause})
	r.opened++
	if pfn := addr.PFN(e.Args[0]); !r.watch[pfn] { // the page hostmem's rule event names
		r.watch[pfn] = true
		r.watching.Add(1)
	}
}

func (r *Responses) unwatch(p addr.PFN) {
	if r.watch[p] {
		delete(r.watch, p)
		r.watching.Add(-1)
	}
}

// watched sees an allocation or free while windows are open: a watched
// page allocated again is reused; freed, it is back in the host's hands.
func (r *Responses) watched(e event.Event) {
	pfn, order := addr.PFN(e.Args[0]), e.Args[1]
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := range r.watch {
		if p >= pfn && p < pfn+addr.PFN(1)<<order {
			if e.Kind == event.KindAlloc {
				r.reused++
			}
			r.unwatch(p)
		}
	}
}

// List returns every response so far, in the order they happened.
func (r *Responses) List() []Response {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Response(nil), r.list...)
}

// Window returns how often the guest_memfd window opened and how many of
// its pages were handed out again while the module still held them.
func (r *Responses) Window() (opened, reused int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opened, r.reused
}

// BugCaused reports whether the KVM_BUG_ON of VM vm was traced to an
// injected fault.
func (r *Responses) BugCaused(vm uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bugs[vm] != ""
}

// Excused reports whether a rule-violation event is a kernel response
// (guest_memfd freeing a page a TD killed by an injected fault maps).
func (r *Responses) Excused(e event.Event) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.excused[eventKey{e.Step, e.Thread, e.Name, e.Detail}]
}

// Uncaused counts the responses no injected fault explains, by kind.
func (r *Responses) Uncaused() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for _, x := range r.list {
		if !x.Caused() {
			out[x.Kind]++
		}
	}
	return out
}

// ErrorCause traces a run's error to an injected fault: an injected
// allocation failure or SEAMCALL fault in its chain (errors.Is), a
// SEAMCALL fault it names that was injected, or the EIO of a VM an
// injected fault killed (a fault it names counts only if that leaf's last
// failure was the injected one). It returns the fault ("" none) and whether the
// error is itself a response (an errno to userspace) rather than the
// echo of a KVM_BUG_ON already counted.
func (r *Responses) ErrorCause(err error) (fault string, own bool) {
	if err == nil {
		return "", false
	}
	var f *inject.Fault
	switch {
	case errors.As(err, &f):
		return f.Leaf.String() + " " + strings.TrimSpace(strings.Split(f.Status.String(), "(")[0]), true
	case errors.Is(err, inject.ErrAllocFailed):
		return "allocation failed", true
	case errors.Is(err, inject.ErrBusy):
		return "injected TDX_OPERAND_BUSY", true
	case errors.Is(err, inject.ErrLeafFailed):
		return "injected SEAMCALL failure", true
	}
	msg := err.Error()
	r.mu.Lock()
	defer r.mu.Unlock()
	if strings.Contains(msg, "KVM_BUG_ON") || strings.Contains(msg, "VM is dead") {
		for _, c := range r.bugs {
			if c == "" {
				return "", false // a VM died of an uncaused KVM_BUG_ON
			}
		}
		return r.firstDeath, false
	}
	best := ""
	for name := range r.faults {
		leaf, st, _ := strings.Cut(name, " ")
		if !r.lastFail[leaf] {
			continue // the leaf's last failure was not injected
		}
		if strings.Contains(msg, leaf) && strings.Contains(msg, st) && (len(name) > len(best) || len(name) == len(best) && name < best) {
			best = name
		}
	}
	return best, best != ""
}

// ErrorKernel names what returned err to userspace: its outermost ioctl
// or kernel function and errno ("KVM_TDX_FINALIZE_VM returns -EBUSY").
func ErrorKernel(err error) string {
	var e *errno.Error
	if errors.As(err, &e) {
		return e.Op + " returns -" + e.Errno.String()
	}
	return "error return"
}
