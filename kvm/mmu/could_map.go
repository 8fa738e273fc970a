package mmu

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/kvm"
)

// levelBeforeAcceptRule is privateLevel without the two things the TDX
// huge-page series adds for the guest's accept level: the fault's max
// level (the level an ACCEPT-carrying EPT violation asks for) and the
// lpage_info guest inhibit. It answers "could KVM have mapped this huge?"
// the way the series' boot counter does: Series: Yan Zhao, "Re: [RFC
// PATCH 09/21] KVM: TDX: Enable 2MB mapping size after TD is RUNNABLE"
// (aGNK2tO2W6+GWtt3@yzhao56-desk.sh.intel.com), ~2710 cases of "guest
// accepts at 4KB when KVM can map at 2MB" in a 4 GB, 8 vCPU TD boot. An
// existing page table below the range (the TD build's 4K leaves) does
// not lower it: kvm_mmu_max_mapping_level() does not look at the SPTEs.
func (m *MMU) levelBeforeAcceptRule(f kvm.Fault) addr.Level {
	order := f.MappingOrder
	if m.cfg.MaxOrderFrom == MaxOrderFromFolio {
		order = f.MaxOrder
	}
	level := min(m.cfg.HugePages.MaxLevel(), m.ext.PrivateMaxLevel(), levelForOrder(order))
	for ; level > addr.Level4K; level-- {
		if f.Slot.HugePageAllowedBeforeInhibit(level, f.GFN) {
			break
		}
	}
	return level
}

// CouldMap returns, for the last private fault this vCPU handled, the
// level KVM could have mapped it at had the guest not asked for a smaller
// one (levelBeforeAcceptRule); Level4K after a shared fault.
func (v *VCPU) CouldMap() addr.Level { return v.couldMap }
