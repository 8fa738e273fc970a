package kernel

// The Refs below are what profiles cite. Each is a lore Message-ID (the
// cover letter's unless said), a kvm-x86/linux tag, or a commit; one ref is
// read in one place so a correction reaches every profile that cites it.
const (
	// "[GIT PULL] KVM: x86: TDX changes for 6.19" (Sean Christopherson),
	// pulled by Paolo Bonzini 2025-11-26; merged as de8e8ebb1a7c.
	refTDX619 = "kvm-x86/linux tag kvm-x86-tdx-6.19"
	// "[PATCH v4 00/28] KVM: x86/mmu: TDX post-populate cleanups".
	refPostPopulate = "20251030200951.3402865-1-seanjc@google.com"
	// "[GIT PULL] KVM: x86: guest_memfd changes for 6.20" (head
	// 2a62345b3052, applied 2026-01-15), merged as 9123c5f956b1 in the
	// 7.0 merge window.
	refGmem620 = "kvm-x86/linux tag kvm-x86-gmem-6.20"
	// KVM_TDX_TERMINATE_VM as applied to kvm-x86 vmx (2025-06).
	refTerminateVM = "kvm-x86/linux commit e4775f57ad51"
	// "[PATCH v5] KVM: TDX: Add sub-ioctl KVM_TDX_TERMINATE_VM" (Sean
	// Christopherson, 2025-07-18): the posting the model follows.
	refTerminateV5 = "20250718181541.98146-1-seanjc@google.com"
	// "[PATCH v3 10/25] KVM: x86/mmu: Drop the return code from
	// kvm_x86_ops.remove_external_spte()" (2025-10-16), of the series
	// 6.19 pulled: its context shows tdx_sept_remove_private_spte()
	// without TERMINATE_VM's reclaim branch.
	refRemoveSPTE619 = "20251017003244.186495-11-seanjc@google.com"
	// "[RFC PATCH v5 34/45] KVM: TDX: Handle removal of leaf SPTEs in
	// .set_private_spte()" (2026-01-28, on kvm-x86-next-2026.01.23, the
	// 7.0 tree): the same function, still without it.
	refRemoveSPTE70 = "20260129011517.3545883-35-seanjc@google.com"
	// Paolo Bonzini's reply to "[GIT PULL] KVM: x86: VMX changes for 6.17"
	// (2025-07-30), quoting Sean's vote to drop KVM_TDX_TERMINATE_VM from
	// 6.17 and land it "in some form by 6.18".
	refTerminateDrop617 = "CABgObfZmn03eQU9XYnFRKfHWNUx006z_4x8Z91hapVHZupUYwA@mail.gmail.com"
	// "[PATCH 0/5] KVM: Drop vm_dead, pivot on vm_bugged for -EIO"
	// (2025-07-29), whose patch 5 reposts KVM_TDX_TERMINATE_VM.
	refVMDead = "20250729193341.621487-1-seanjc@google.com"
	// "[GIT PULL] KVM: x86: VMX changes for 6.18" (2025-09-27).
	refVMX618 = "20250927060910.2933942-6-seanjc@google.com"
	// "[PATCH v3 00/24] KVM: TDX huge page support for private memory"
	// (Yan Zhao, 2026-01-06).
	refHugeV3 = "20260106101646.24809-1-yan.y.zhao@intel.com"
	// Sean's reply to huge-page v3 patch 14 (2026-01-15): per-VM memory
	// attributes are to be deprecated; S-EPT huge pages go with guest_memfd
	// attributes.
	refHugeGmemAttrs = "aWmEegVP_A613WIr@google.com"
	// Dynamic PAMT v4 (Rick Edgecombe, 16 patches, 2025-11-20 -0800), the
	// v4 that the v6 cover letter cites as [1].
	refDPAMTv4 = "20251121005125.417831-1-rick.p.edgecombe@intel.com"
	// "[PATCH v4 11/16] KVM: TDX: Add x86 ops for external spt cache":
	// mmu_external_spt_cache moves from kvm_vcpu_arch into struct vcpu_tdx
	// behind topup/alloc/free_external_fault_cache ops.
	refDPAMTv4Cache = "20251121005125.417831-12-rick.p.edgecombe@intel.com"
	// Sean's NAK of mixing KVM's and TDX's page pools (2026-01-16).
	refDPAMTv4CacheNAK = "aWrdpZCCDDAffZRM@google.com"
	// "[RFC PATCH v5 00/45] TDX: Dynamic PAMT + S-EPT Hugepage" (Sean
	// Christopherson, 2026-01-28), on kvm-x86-next-2026.01.23.
	refRFCv5 = "20260129011517.3545883-1-seanjc@google.com"
	// "[PATCH v6 00/11] Dynamic PAMT" (Rick Edgecombe, 2026-05-25).
	refDPAMTv6 = "20260526023515.288829-1-rick.p.edgecombe@intel.com"
	// "[PATCH v6 04/11] x86/virt/tdx: Allocate ref counts for Dynamic PAMT
	// memory".
	refDPAMTv6Refcounts = "20260526023515.288829-5-rick.p.edgecombe@intel.com"
	// "[PATCH v6 09/11] KVM: TDX: Get/put PAMT pages when (un)mapping
	// private memory" (on patch 08 "x86/tdx: Add APIs to support Dynamic
	// PAMT ops from KVM's fault path", 20260526023515.288829-9-...).
	refDPAMTv6Fault = "20260526023515.288829-10-rick.p.edgecombe@intel.com"
	// "[PATCH v4 08/16] x86/virt/tdx: Optimize tdx_alloc/free_page()
	// helpers" and "[PATCH v6 06/11] x86/virt/tdx: Optimize
	// tdx_pamt_get/put()": the refcount fast paths (Profile.PAMTPutUnderLock).
	refDPAMTv4Optimize = "20251121005125.417831-9-rick.p.edgecombe@intel.com"
	refDPAMTv6Optimize = "20260526023515.288829-7-rick.p.edgecombe@intel.com"
	refRFCv5Optimize   = "20260129011517.3545883-18-seanjc@google.com"
	// "[PATCH v6 10/11] x86/virt/tdx: Enable Dynamic PAMT".
	refDPAMTv6Enable = "20260526023515.288829-11-rick.p.edgecombe@intel.com"
	// "[PATCH v4 06/16] x86/virt/tdx: Improve PAMT refcounts allocation
	// for sparse memory".
	refDPAMTv4Sparse = "20251121005125.417831-7-rick.p.edgecombe@intel.com"
	// The full stack v6 names as its base.
	refDPAMTv6Tree = "intel-staging/tdx branch dpamt_v6"
	// v6's prerequisites as its cover letter cites them: the TDX MMU
	// refactor v2 (Yan Zhao) and the struct page to PFN series.
	refMMURefactorV2 = "20260509075201.4077-1-yan.y.zhao@intel.com"
	refPageToPFN     = "20260430014852.24183-1-yan.y.zhao@intel.com"
	// "[PATCH RFC v4 15/44] KVM: Add CAP to enumerate supported
	// SET_MEMORY_ATTRIBUTES2 flags" (Ackerley Tng, 2026-03-26).
	refInPlaceV4Cap = "20260326-gmem-inplace-conversion-v4-15-e202fe950ffd@google.com"
	// "guest_memfd: In-place conversion support" v8 (2026-06-18), the
	// latest posting whose patches and replies are in the list archive
	// read here.
	refInPlaceV8 = "20260618-gmem-inplace-conversion-v8-0-9d2959357853@google.com"
	// v13 (2026-09-10), known only from a list digest that reports it
	// applied 2026-09-24.
	refInPlaceV13 = "20260910-gmem-inplace-conversion-v13-0-dd6fbf94f4e1@google.com"
)

// Sources shared by the merged-release profiles.
var (
	srcTDX619 = Source{
		Ref:      refTDX619,
		What:     "6.19's TDX overhaul: \"Drop superfluous page pinning in S-EPT management\", \"ADD pages to the TD image while populating mirror EPT entries\", \"Drop the return code from kvm_x86_ops.remove_external_spte()\", the lock-contention fixes",
		Verified: true,
	}
	srcPostPopulate = Source{
		Ref:      refPostPopulate,
		What:     "the series 6.19's TDX pull carries (v4, 28 patches, 2025-10-30)",
		Verified: true,
	}
	srcGmem620 = Source{
		Ref:      refGmem620,
		What:     "7.0's guest_memfd rework: kvm_gmem_populate() drops preparation tracking, KVM_TDX_INIT_MEM_REGION's source must be 4 KiB aligned, the source page is GUP'd in common code before the filemap invalidate lock",
		Verified: true,
	}
	srcTerminateVM = Source{
		Ref:      refTerminateV5,
		What:     "KVM_TDX_TERMINATE_VM v5 (applied to kvm-x86 as " + refTerminateVM + "): tdx_terminate_vm() takes every vCPU mutex (-EBUSY), kvm_vm_dead(), tdx_mmu_release_hkid(); tdx_sept_remove_private_spte() then reclaims each leaf with TDH.PHYMEM.PAGE.RECLAIM (TD_TEARDOWN); the model's teardown=terminate_vm",
		Verified: true,
	}
	srcTerminateRelease = Source{
		Ref:      refRemoveSPTE619,
		What:     "no release has KVM_TDX_TERMINATE_VM: it was dropped from the 6.17 VMX pull (" + refTerminateDrop617 + "), reposted in " + refVMDead + ", and tdx_sept_remove_private_spte() still KVM_BUG_ONs a released HKID in the 6.19 series (this patch) and on kvm-x86-next-2026.01.23 (" + refRemoveSPTE70 + ")",
		Verified: true,
		Note:     "the release tags themselves were not read; the two patches' diff context is the tree each applies to",
	}
	srcRemoveSPTE70 = Source{
		Ref:      refRemoveSPTE70,
		What:     "RFC v5 patch 34 on kvm-x86-next-2026.01.23: tdx_sept_remove_private_spte() still KVM_BUG_ONs a released HKID and removes each leaf with BLOCK, TRACK, REMOVE, WBINVD (no KVM_TDX_TERMINATE_VM in the 7.0 tree)",
		Verified: true,
	}
	srcMaxLevel4K = Source{
		Ref:      "arch/x86/kvm/vmx/tdx.c tdx_gmem_max_mapping_level()",
		What:     "returns PG_LEVEL_4K for private memory (renamed from tdx_gmem_private_max_mapping_level() by the guest_memfd mmap work; the huge-page series is what makes it return PG_LEVEL_2M)",
		Verified: true,
		Note:     "read from patches applied on kvm-x86 next around 6.19/7.0, not from the v6.19 tag itself",
	}
	srcSplitHooks = Source{
		Ref:      refRFCv5,
		What:     "RFC v5 applies on kvm-x86-next-2026.01.23 and its patch 05 drops kvm_x86_ops.link_external_spt(): that tree (7.0's) still has separate link/set/remove/free external-SPTE hooks",
		Verified: true,
	}
)
