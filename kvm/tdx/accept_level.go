package tdx

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/internal/enumname"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// AcceptLevelRule is the accept_level policy (docs/policies.md): what KVM
// does with the accept level an EPT violation raised by TDG.MEM.PAGE.ACCEPT
// carries in its extended exit qualification. The zero value is the
// posted series' design.
type AcceptLevelRule uint8

// Accept-level rules.
const (
	// AcceptGuestInhibit is the huge-page series from RFC v2 on: a one-way
	// KVM_LPAGE_GUEST_INHIBIT_FLAG in lpage_info, tested without the lock;
	// only when it is not yet set does tdx_check_accept_level() take
	// mmu_lock for write to split the huge leaf and set it. Series: "[RFC
	// PATCH v2 14/23] KVM: TDX: Split and inhibit huge mappings if a
	// VMExit carries level info" and its v3 successor; the write-lock
	// count, 11 per boot, in Yan Zhao's
	// aGNK2tO2W6+GWtt3@yzhao56-desk.sh.intel.com.
	AcceptGuestInhibit AcceptLevelRule = iota
	// AcceptGuestInhibitAlwaysLock is the same rule without the lock-free
	// test ("step 1"): every ACCEPT-carrying EPT violation takes mmu_lock
	// for write. Series: Yan Zhao, aGSoDnODoG2/pbYn@yzhao56-desk.sh.intel.com:
	// "Step 1 can help reduce the count of write mmu_lock from 17626 to 11."
	AcceptGuestInhibitAlwaysLock
	// AcceptViolationRequestLevel is RFC v1's design: the vCPU records
	// violation_gfn_start/end and violation_request_level from the exit
	// and tdx_gmem_private_max_mapping_level() returns that level for
	// GFNs in the range; nothing global is set and no lock is taken for
	// write. Series: "[RFC PATCH 12/21] KVM: TDX: Determine max mapping
	// level according to vCPU's ACCEPT level"
	// (20250424030713.403-1-yan.y.zhao@intel.com). Its patch 21 ("Ignore
	// splitting huge pages in fault path for TDX") refuses a split a
	// fault would need under the read lock; the model does not have that
	// path (such a fault is the model's KVM_BUG, as without the series),
	// and a Linux boot does not reach it.
	AcceptViolationRequestLevel
)

var acceptLevelNames = enumname.New[AcceptLevelRule]("accept_level", "AcceptLevelRule",
	"guest_inhibit", "guest_inhibit_always_lock", "violation_request_level")

func (r AcceptLevelRule) String() string { return acceptLevelNames.String(r) }

// ParseAcceptLevelRule reads guest_inhibit, guest_inhibit_always_lock or
// violation_request_level.
func ParseAcceptLevelRule(s string) (AcceptLevelRule, error) { return acceptLevelNames.Parse(s) }

// countAcceptLevel counts, once the fault of exit x is handled, a 4K
// ACCEPT whose GFN KVM could have mapped at 2M (Accept4KWhere2M).
func (v *VCPU) countAcceptLevel(x tdxmodule.Exit, private bool) {
	if private && x.ExtQual == tdxmodule.ExtQualAccept && x.ReqLevel == addr.Level4K && v.mmu.CouldMap() >= addr.Level2M {
		v.accept4KWhere2M.Add(1)
	}
}

// Accept4KWhere2M counts this vCPU's EPT violations raised by a 4K
// TDG.MEM.PAGE.ACCEPT at a GFN KVM could have mapped at 2M (guest_memfd
// order, slot alignment, attributes and the huge-pages policy allow it;
// the guest inhibit the accept itself sets does not count): the huge-page
// series' "guest accepts at 4KB when KVM can map at 2MB" (Series: Yan
// Zhao, aGNK2tO2W6+GWtt3@yzhao56-desk.sh.intel.com).
func (v *VCPU) Accept4KWhere2M() int64 { return v.accept4KWhere2M.Load() }
