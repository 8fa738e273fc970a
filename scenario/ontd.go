package scenario

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
)

// TDRef names the TD a step acts on. Every step kind on one TD embeds it
// (a guest workload as Workload): its td key, TDName, the TD resolved
// before the kind's check (onTD), and the Op methods a host event on
// one TD has in common: it is not a guest workload and has nothing to
// halve unless the kind says otherwise.
type TDRef struct {
	TD string `yaml:"td" doc:"TD name (default: the only TD)"`
}

func (r *TDRef) TDName() string      { return r.TD }
func (r *TDRef) GuestWorkload() bool { return false }
func (r *TDRef) Smaller() bool       { return false }
func (r *TDRef) resolvesTD()         {}

// Workload is TDRef for a guest workload: a step that runs on its TD's
// vCPUs (a vCPU runs one at a time). A kind that can shrink defines its
// own Smaller.
type Workload TDRef

func (w *Workload) TDName() string      { return w.TD }
func (w *Workload) GuestWorkload() bool { return true }
func (w *Workload) Smaller() bool       { return false }
func (w *Workload) resolvesTD()         {}

// onTD is a kind that embeds TDRef or Workload: the timeline check
// resolves the TD it names (the only TD when it names none; not one torn
// down) before the kind's own check, which gets the TD's index.
type onTD interface{ resolvesTD() }

// halve halves *n for a kind's Smaller while it is above floor; false
// when it is not.
func halve[T int | Size](n *T, floor T) bool {
	if *n > floor {
		*n /= 2
		return true
	}
	return false
}

// pages4K checks a step's gpa and size are 4K multiples and size is not
// 0; sizeRule ends the rule's text (each kind words it its own way).
func (c *timelineCheck) pages4K(at string, gpa, size Size, sizeRule string) error {
	if uint64(gpa)%addr.PageSize != 0 || uint64(size)%addr.PageSize != 0 || size == 0 {
		return c.f.bad(at, "gpa %#x and size %#x must be 4K multiples"+sizeRule, uint64(gpa), uint64(size))
	}
	return nil
}

// liveRange checks [gpa, gpa+size) lies inside one live memslot of TD i.
func (c *timelineCheck) liveRange(i int, at string, gpa, size Size) error {
	if !c.inLiveSlot(i, uint64(gpa), uint64(size)) {
		return c.f.bad(at, "[%#x, +%#x) is not inside one live memslot of %s", uint64(gpa), uint64(size), c.f.Scenario.TDs[i].Name)
	}
	return nil
}

// onVCPU runs fn on vCPU k of td. Every vCPU's thread starts and halts
// as with onVCPUs: only k does the work.
func (rn *runner) onVCPU(t *sched.Thread, td *tdRun, k int, fn func(vt *sched.Thread, v *tdx.VCPU) error) error {
	return rn.onVCPUs(t, td, func(vt *sched.Thread, i int, v *tdx.VCPU) error {
		if i != k {
			return nil
		}
		return fn(vt, v)
	})
}
