package kernel

// memtypeZapNone is the memory-type zap rule the merged trees (6.19, 7.0)
// have for a TD, for a profile to list and to map onto
// kvm.Config.MemtypeZap = kvm.MemtypeZapNone. The model's default stays
// kvm.MemtypeZapSharedOnly (today's behaviour).
//
// Kernel: arch/x86/kvm/x86.c kvm_noncoherent_dma_assignment_start_or_stop()
// calls kvm_zap_gfn_range() only if kvm_check_has_quirk(kvm,
// KVM_X86_QUIRK_IGNORE_GUEST_PAT), and arch/x86/kvm/vmx/tdx.c
// tdx_vm_init() sets that quirk in kvm->arch.disabled_quirks (both read in
// trees of the 6.19 and 7.0 cycles); kvm_tdp_mmu_zap_leafs() itself walks
// every valid root, the mirror included, so the rule lives in the caller.
// The runner maps the flag onto kvm.Config.MemtypeZap; 6.19 and 7.0 list
// it. The series profiles apply to trees with the same x86.c; they keep
// kvm.MemtypeZapSharedOnly for now, because the default profile is one of
// them and its reports (the hazards' among them) would change.
var memtypeZapNone = Behaviour{
	Flag:        "memtype_zap=none",
	Implemented: true,
	Verified:    true,
	Source:      refPostPopulate,
	Note:        "the series' commit 'KVM: TDX: Use kvm_tdp_mmu_map_private_pfn()' lists the kvm_zap_gfn_range() callers a TD can reach: sev.c (not a TD), non-coherent DMA (TDX disallows KVM_X86_QUIRK_IGNORE_GUEST_PAT) and the APICv inhibit (the APIC page is its own non-guest_memfd memslot); kvm.MemtypeZapNone; the model's default is kvm.MemtypeZapSharedOnly",
}

// MemtypeZapNone is memtypeZapNone for the layer that maps profiles onto
// kvm.Config.
func MemtypeZapNone() Behaviour { return memtypeZapNone }
