package kernel

// Behaviour flags shared by profiles. Each names what the profile's tree
// does where the model has no policy for it yet.
var (
	// No KVM_TDX_TERMINATE_VM: private leaves are removed with the HKID
	// still assigned, BLOCK/TRACK/REMOVE/WBINVD per leaf, and the HKID is
	// released only when the VM is destroyed. The ioctl itself is the
	// policy teardown=terminate_vm (a tree that had it for a while).
	perPageTeardown = Behaviour{
		Flag:        "teardown=per_page",
		Implemented: true,
		Verified:    true,
		Source:      refRemoveSPTE619,
		Note:        "tdx_sept_remove_private_spte() still opens with KVM_BUG_ON(!is_hkid_assigned()) in the 6.19 series (v3 patch 10) and on kvm-x86-next-2026.01.23 (RFC v5 patch 34), so no release up to 7.0 has KVM_TDX_TERMINATE_VM's reclaim branch; later bases were not re-read. The ioctl (kvm-x86 e4775f57ad51, 2025-06, dropped from the 6.17 pull) is policy teardown=terminate_vm",
	}
	// The S-EPT hooks as four ops: link_external_spt, set_external_spte,
	// remove_external_spte, free_external_spt.
	splitHooks = Behaviour{
		Flag:        "set_external_spte=split",
		Implemented: true,
		Verified:    true,
		Source:      refRFCv5,
		Note:        "the tree RFC v5 applies to still has link_external_spt(); the model's TDX layer has the four hooks",
	}
	// RFC v5: one set_external_spte(old_spte, new_spte) for leaf add,
	// non-leaf add and leaf removal.
	foldedHooks = Behaviour{
		Flag:     "set_external_spte=folded",
		Verified: true,
		Source:   refRFCv5,
		Note:     "patch 05 'Drop kvm_x86_ops.link_external_spt(), use .set_external_spte() for all', then 'Plumb the old_spte into kvm_x86_ops.set_external_spte()' and 'Handle removal of leaf SPTEs in .set_private_spte()'; no release folds the hooks as far as the sources read here show",
	}
	// 7.0: KVM_TDX_INIT_MEM_REGION's source must be 4 KiB aligned and is
	// GUP'd by kvm_gmem_populate() before the filemap invalidate lock.
	populateSourceGUP = Behaviour{
		Flag:     "populate_source=gup_before_invalidate_lock",
		Verified: true,
		Source:   refGmem620,
		Note:     "the model does not check the source's alignment nor model the source page's reference",
	}
	// 7.0: kvm_gmem_populate() no longer tracks preparation.
	noPrepareTracking = Behaviour{
		Flag:     "gmem_prepare_tracking=none",
		Verified: true,
		Source:   refGmem620,
	}
)

// seriesPostPopulate is the post-populate cleanups both merged releases
// carry.
var seriesPostPopulate = Series{Name: "KVM: x86/mmu: TDX post-populate cleanups", Version: "v4", Date: "2025-10-30", Ref: refPostPopulate, Merged: true}

// mainlinePolicies is the policy list of a merged release: no huge pages,
// static PAMT, no pinning, populate through kvm_tdp_mmu_map_private_pfn()
// (sourced by populate) and per-page teardown (sourced by teardown).
func mainlinePolicies(populate, teardown string) []Policy {
	return []Policy{
		{Key: "hugepages", Value: "off", Source: srcMaxLevel4K.Ref, Fixed: true},
		{Key: "dynamic_pamt", Value: "false", Source: refDPAMTv6, Fixed: true},
		{Key: "pin_private_pages", Value: "false", Source: refTDX619},
		{Key: "populate", Value: "map_private_pfn", Source: populate},
		{Key: "teardown", Value: "per_page", Source: teardown, Fixed: true},
	}
}

// registry is All's order: merged releases oldest first, then series by
// posting date.
var registry = []Profile{
	{
		Name:    "6.19",
		Base:    "v6.19",
		Summary: "mainline 6.19: 4 KiB private mappings, static PAMT, no page pinning, TD build through kvm_gmem_populate() + kvm_tdp_mmu_map_private_pfn()",
		Merged:  true,
		Series: []Series{
			seriesPostPopulate,
			{Name: "KVM TDX changes for 6.19", Version: "kvm-x86-tdx-6.19", Date: "2025-11-26", Ref: refTDX619, Merged: true, Note: "the pull that carries the series"},
		},
		Policies:   mainlinePolicies(refTDX619, refRemoveSPTE619),
		Behaviours: []Behaviour{splitHooks, perPageTeardown, memtypeZapNone},
		Sources:    []Source{srcTDX619, srcPostPopulate, srcMaxLevel4K, srcSplitHooks, srcTerminateVM, srcTerminateRelease, srcDPAMTv6},
	},
	{
		Name:    "7.0",
		Base:    "v7.0",
		Summary: "mainline 7.0: 6.19 plus the guest_memfd populate rework (4 KiB-aligned sources GUP'd outside the invalidate lock, no preparation tracking)",
		Merged:  true,
		Series: []Series{
			seriesPostPopulate,
			{Name: "guest_memfd populate rework", Version: "kvm-x86-gmem-6.20", Date: "2026-01-15", Ref: refGmem620, Merged: true, Note: "Michael Roth's series as pulled; the posting's Message-ID was not read"},
		},
		Policies:   mainlinePolicies(refGmem620, refRemoveSPTE70),
		Behaviours: []Behaviour{splitHooks, populateSourceGUP, noPrepareTracking, perPageTeardown, memtypeZapNone},
		Sources:    []Source{srcTDX619, srcGmem620, srcMaxLevel4K, srcSplitHooks, srcTerminateVM, srcTerminateRelease, srcRemoveSPTE70, srcDPAMTv6},
	},
	{
		Name:    "hugepage-v3+dpamt-v4",
		Base:    "kvm-x86 next (base commit not read)",
		Summary: "the huge-page v3 series on Dynamic PAMT v4, neither merged: what the scenario defaults (hugepages: 2M, dynamic_pamt: true) stand for",
		Series: []Series{
			{Name: "Dynamic PAMT", Version: "v4", Date: "2025-11-21", Ref: refDPAMTv4, Note: "16 patches (posted 2025-11-20 -0800); cited as v4 by the v6 cover letter; the cover letter's exact subject was not read"},
			{Name: "KVM: TDX huge page support for private memory", Version: "v3", Date: "2026-01-06", Ref: refHugeV3},
		},
		Policies: []Policy{
			{Key: "hugepages", Value: "2M", Source: refHugeV3},
			{Key: "dynamic_pamt", Value: "true", Source: refDPAMTv4},
			{Key: "pin_private_pages", Value: "false", Source: refTDX619},
			{Key: "populate", Value: "map_private_pfn", Source: refTDX619},
		},
		Behaviours: []Behaviour{
			splitHooks,
			{
				Flag:     "hugepage_gate=enhanced_demote_interruptibility",
				Verified: true,
				Source:   refHugeV3,
				Note:     "v3 patches 2 and 24: huge pages only when the module reports TDX_FEATURES0.ENHANCED_DEMOTE_INTERRUPTIBILITY (bit 51; Yan Zhao in the thread: first enumerated by TDX_1.5.28), and kvm_intel.tdx_huge_page=N turns them off; the TD build stays at 4 KiB",
			},
			{
				Flag:   "demote=interrupted_restartable",
				Source: refHugeV3,
				Note:   "on modules without the feature TDH.MEM.PAGE.DEMOTE can return TDX_INTERRUPTED_RESTARTABLE, which is why v3 gates on it; how (or whether) KVM retries was not read from the patches",
			},
			{
				Flag:     "dpamt_cache=per_vcpu",
				Verified: true,
				Source:   refDPAMTv4Cache,
				Note:     "v4 patch 11 moves mmu_external_spt_cache into struct vcpu_tdx behind topup/alloc/free_external_fault_cache; that is the policy value external_spt_cache=tdx_prealloc, which Sean NAK'd (" + refDPAMTv4CacheNAK + "). This profile keeps the scenario default external_spt_cache=kvm, i.e. v4 without patch 11's cache move",
			},
			{
				Flag:        "pamt_get_put=refcount_fastpath",
				Implemented: true,
				Verified:    true,
				Source:      refDPAMTv4Optimize,
				Note:        "tdx_pamt_get(): atomic_inc_not_zero() first, the pair allocated and pamt_lock taken only for 0 -> 1; tdx_pamt_put(): atomic_dec_and_test() outside the lock, then a recheck under it, so a get in between meets the pair not yet removed and takes TDX_HPA_RANGE_NOT_FREE from PAMT.ADD as success (refcount set to 1, pages freed); a failed PAMT.REMOVE puts the reference back (atomic_inc)",
			},
			perPageTeardown,
		},
		Sources: []Source{
			{Ref: refHugeV3, What: "huge-page v3 cover letter and thread (24 patches, Yan Zhao): the module-feature gate, the tdx_huge_page parameter, Dynamic PAMT v4 integration", Verified: true},
			{Ref: refDPAMTv4, What: "Dynamic PAMT v4: its patches and review on the list (16 patches)", Verified: true},
			{Ref: refHugeGmemAttrs, What: "Sean: S-EPT huge pages go with guest_memfd attributes; per-VM attributes are to be deprecated", Verified: true},
			{Ref: refDPAMTv4Cache, What: "v4 patch 11: the S-EPT page cache moves into struct vcpu_tdx behind x86 ops", Verified: true},
			{Ref: refDPAMTv4CacheNAK, What: "Sean NAKs mixing KVM's and TDX's page pools", Verified: true},
			srcTDX619, srcSplitHooks, srcTerminateRelease,
			{Ref: refDPAMTv4Sparse, What: "v4 patch 06: the refcount vmalloc range is populated only over TDX memory", Verified: true},
			{Ref: refDPAMTv4Optimize, What: "v4 patch 08: the refcount fast paths of tdx_pamt_get()/tdx_pamt_put() and TDX_HPA_RANGE_NOT_FREE", Verified: true},
		},
		Refcounts: RefcountSparse,
	},
	{
		Name:    "rfc-v5",
		Base:    "kvm-x86-next-2026.01.23",
		Summary: "Sean's combined RFC: Dynamic PAMT + S-EPT huge pages, one set_external_spte hook, S-EPT pages from a KVM cache filled by a TDX allocator",
		Series: []Series{
			{Name: "TDX: Dynamic PAMT + S-EPT Hugepage", Version: "RFC v5", Date: "2026-01-28", Ref: refRFCv5, Note: "45 patches; firmly RFC by its own cover letter; discussed until 2026-06"},
		},
		Policies: []Policy{
			{Key: "hugepages", Value: "2M", Source: refRFCv5},
			{Key: "dynamic_pamt", Value: "true", Source: refRFCv5},
			{Key: "pin_private_pages", Value: "false", Source: refTDX619},
			{Key: "populate", Value: "map_private_pfn", Source: refTDX619},
			{Key: "external_spt_cache", Value: "kvm", Source: refRFCv5},
		},
		Behaviours: []Behaviour{
			foldedHooks,
			{
				Flag:     "free_external_spt=reclaim_external_sp",
				Verified: true,
				Source:   refRFCv5,
				Note:     "'Rework .free_external_spt() into .reclaim_external_sp()'",
			},
			{
				Flag:     "sept_page_alloc=tdx_control_page",
				Verified: true,
				Source:   refRFCv5,
				Note:     "KVM's kvm_mmu_memory_cache keeps the pages but its owner supplies the allocator: S-EPT pages come from tdx_alloc_control_page(), so DPAMT backing is installed when the cache is filled",
			},
			{
				Flag:     "hugepage_attributes=gmem_only",
				Verified: true,
				Source:   refHugeGmemAttrs,
				Note:     "S-EPT huge pages need guest_memfd memory attributes, not per-VM ones",
			},
			{
				Flag:     "dpamt_get_put=4k_only",
				Verified: true,
				Source:   refRFCv5,
				Note:     "'Get/Put DPAMT page pair if and only if mapping size is 4KB'",
			},
			{
				Flag:        "pamt_get_put=refcount_fastpath",
				Implemented: true,
				Verified:    true,
				Source:      refRFCv5Optimize,
				Note:        "patch 17 is v4's patch 08 renamed to tdx_alloc/free_control_page(): the same fast paths and TDX_HPA_RANGE_NOT_FREE case",
			},
			perPageTeardown,
		},
		Sources: []Source{
			{Ref: refRFCv5, What: "RFC v5 cover letter: patch list, base kvm-x86-next-2026.01.23, 'firmly RFC'", Verified: true},
			{Ref: refHugeGmemAttrs, What: "Sean: don't support S-EPT huge pages with per-VM attributes", Verified: true},
			{Ref: refRFCv5Optimize, What: "RFC v5 patch 17: 'x86/virt/tdx: Optimize tdx_alloc/free_control_page() helpers'", Verified: true},
			srcTDX619, srcTerminateRelease,
		},
		// As v4: the v6 cover letter counts the refcount optimisation
		// among what v6 dropped, not what v5 dropped.
		Refcounts: RefcountSparse,
	},
	gmemInplaceRFCv5,
	{
		Name:    "dpamt-v6",
		Base:    "TDX MMU refactor v2 on struct page -> PFN v2 (not merged)",
		Summary: "Dynamic PAMT v6 alone: back to v4's page cache for DPAMT backing, no sparse-memory refcount optimisation: the refcount array spans 0..max_pfn",
		Series: []Series{
			{Name: "KVM: TDX: struct page to PFN", Version: "v2", Date: "2026-04-30", Ref: refPageToPFN, Note: "prerequisite; title not read"},
			{Name: "KVM: TDX MMU refactor", Version: "v2", Date: "2026-05-09", Ref: refMMURefactorV2, Note: "prerequisite; title not read"},
			{Name: "Dynamic PAMT", Version: "v6", Date: "2026-05-26", Ref: refDPAMTv6, Note: "11 patches; posted 2026-05-25 19:35 -0700"},
		},
		Policies: []Policy{
			{Key: "hugepages", Value: "off", Source: refDPAMTv6, Fixed: true},
			{Key: "dynamic_pamt", Value: "true", Source: refDPAMTv6},
			{Key: "pin_private_pages", Value: "false", Source: refTDX619},
			{Key: "populate", Value: "map_private_pfn", Source: refTDX619},
		},
		Behaviours: []Behaviour{
			{
				Flag:   "set_external_spte=folded",
				Source: refMMURefactorV2,
				Note:   "v6 sits on the TDX MMU refactor, which its cover letter says is RFC v5's MMU work split out; whether that carries RFC v5's fold of link_external_spt() was not read",
			},
			{
				Flag:        "dpamt_cache=per_vcpu",
				Implemented: true,
				Verified:    true,
				Source:      refDPAMTv6Fault,
				Note:        "patch 08 adds struct tdx_pamt_cache and tdx_topup_pamt_cache(cache, npages), which fills the list to exactly npages * TDX_DPAMT_ENTRY_PAGE_CNT (2) pages; patch 09 puts one in struct vcpu_tdx and has mmu_topup_memory_caches() call the topup_external_cache op with PT64_ROOT_MAX_LEVEL (5) before mmu_lock: 10 pages, refilled to 10 whenever fewer remain. tdx_pamt_get(pfn, &tdx->pamt_cache) draws the pair from it under mmu_lock. A TDX-owned cache separate from KVM's S-EPT page cache, so external_spt_cache stays kvm",
			},
			{
				Flag:        "pamt_refcount_array=max_pfn",
				Implemented: true,
				Verified:    true,
				Source:      refDPAMTv6Refcounts,
				Note:        "init_pamt_refcounts(): __vmalloc(DIV_ROUND_UP(max_pfn, PTRS_PER_PTE) * sizeof(atomic_t)), 4 bytes per 2 MiB from 0 to max_pfn (2 MiB per TiB; 8 GiB for the whole 52-bit space). Reported as memory.pamt_refcount_bytes from host.max_pfn; not taken from the modelled host memory",
			},
			{
				Flag:        "dpamt_phys_bits<=48",
				Implemented: true,
				Verified:    true,
				Source:      refDPAMTv6Enable,
				Note:        "tdx_supports_dynamic_pamt() also needs x86_phys_bits <= 48: a host.max_pfn above 2^48 (256 TiB) with dynamic_pamt: true is exit 2. So the cover letter's 8 GB worst case (max_pfn at a 52-bit maxpa) cannot occur with v6's own gate; the largest v6 array is 512 MiB (max_pfn at 2^48)",
			},
			{
				Flag:        "pamt_get_put=refcount_fastpath",
				Implemented: true,
				Verified:    true,
				Source:      refDPAMTv6Optimize,
				Note:        "kept from v4 with one change: tdx_pamt_put() drops the reference with atomic_dec_and_lock(), so 1 -> 0 happens under pamt_lock and the get side no longer needs the TDX_HPA_RANGE_NOT_FREE case (a PAMT.ADD that fails is a WARN and -EIO); a failed PAMT.REMOVE sets the refcount back to 1",
			},
			perPageTeardown,
		},
		Sources: []Source{
			srcDPAMTv6,
			{Ref: refDPAMTv6Tree, What: "the full stack v6 is tested on", Verified: false, Note: "the branch itself was not read"},
			{Ref: refMMURefactorV2, What: "prerequisite cited by v6 as [3]", Verified: true},
			{Ref: refPageToPFN, What: "prerequisite cited by v6 as [4]", Verified: true},
			{Ref: refDPAMTv4Cache, What: "v4 patch 11, the per-vCPU cache v6 returns to", Verified: true},
			{Ref: refDPAMTv6Refcounts, What: "v6 patch 04: init_pamt_refcounts(), one vmalloc 0..max_pfn", Verified: true},
			{Ref: refDPAMTv6Fault, What: "v6 patches 08 and 09: struct tdx_pamt_cache, tdx_topup_pamt_cache(), the per-vCPU cache topped up from mmu_topup_memory_caches()", Verified: true},
			{Ref: refDPAMTv6Enable, What: "v6 patch 10: Dynamic PAMT only with x86_phys_bits <= 48", Verified: true},
			{Ref: refDPAMTv6Optimize, What: "v6 patch 06: the refcount fast paths, tdx_pamt_put() with atomic_dec_and_lock()", Verified: true},
			srcTDX619, srcTerminateRelease,
		},
		Refcounts:        RefcountMaxPFN,
		PAMTCachePages:   10,
		DPAMTMaxPhysBits: DPAMTMaxPhysBits,
		PAMTPutUnderLock: true,
	},
	{
		Name:    "gmem-inplace-v8",
		Base:    "kvm/next (base commit not read)",
		Summary: "guest_memfd in-place conversion v8: KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd (flags 0: content modes were dropped in v6), kvm.gmem_in_place_conversion=Y makes guest_memfd attributes exclusive of per-VM ones",
		Series: []Series{
			{Name: "guest_memfd: In-place conversion support", Version: "v8", Date: "2026-06-18", Ref: refInPlaceV8, Note: "latest posting verified from the list; v10 (2026-08-07), v12 (2026-08-30) and v13 (2026-09-10, reported applied 2026-09-24) are known only from list digests"},
		},
		On:                  "7.0",
		Conversion:          "in_place",
		ExclusiveAttributes: true,
		ExclusiveParam:      "kvm.gmem_in_place_conversion=Y",
		Policies: []Policy{
			{Key: "pin_private_pages", Value: "false", Source: refTDX619},
		},
		Behaviours: []Behaviour{
			{
				Flag:        "set_memory_attributes2=flags_zero",
				Implemented: true,
				Verified:    true,
				Source:      refInPlaceV6,
				Note:        "v6 dropped the content modes (ZERO/PRESERVE) and KVM_CAP_MEMORY_ATTRIBUTES2_FLAGS, and v7/v8 did not bring them back (their patch lists): flags must be 0, EINVAL otherwise, as before RFC v5 patch 22; the v8 patch itself was not re-read for the check",
			},
			{
				Flag:     "gmem_memory_attributes_cap=KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES",
				Verified: true,
				Source:   refInPlaceV4Cap,
				Note:     "capability 249 beside KVM_CAP_MEMORY_ATTRIBUTES2 (248) in RFC v4's uapi; the model answers no such capability",
			},
			{
				Flag:        "gmem_in_place_conversion=Y",
				Implemented: true,
				Verified:    true,
				Source:      refInPlaceV8Param,
				Note:        "v8 patch 24: kvm.ko bool gmem_in_place_conversion (0444), default !CONFIG_KVM_VM_MEMORY_ATTRIBUTES; with it per-VM PRIVATE tracking is off (RFC v5 had the inverse, vm_memory_attributes=N), so tds[].conversion: kvm is exit 2. Yan Zhao asked to rename it (e.g. gmem_memory_attribute) in the v8 review",
			},
		},
		Sources: []Source{
			{Ref: refInPlaceV8, What: "v8 patches and review (Yan Zhao, Binbin Wu, Xiaoyao Li replies)", Verified: true},
			{Ref: refInPlaceV4Cap, What: "RFC v4 patch 15: KVM_CAP_MEMORY_ATTRIBUTES2_FLAGS, ZERO/PRESERVE, vm_memory_attributes", Verified: true},
			{Ref: refInPlaceV6, What: "v6 cover letter: content modes dropped", Verified: true},
			{Ref: refInPlaceV8Param, What: "v8 patch 24 as quoted by Yan Zhao: the gmem_in_place_conversion module parameter", Verified: true},
			{Ref: refInPlaceV13, What: "v13, reported applied by a list digest", Verified: false, Note: "neither the v13 posting nor the b4 thanks were found in the archive"},
			srcTDX619,
		},
	},
}

// srcDPAMTv6 is cited by the merged profiles for "no release has Dynamic
// PAMT": v6 says its prerequisites are still on the list.
var srcDPAMTv6 = Source{
	Ref:      refDPAMTv6,
	What:     "Dynamic PAMT v6 cover letter: not mergeable yet, two prerequisite series still on the list; the refcount optimisation dropped; refcount array 0..max_pfn (worst case 8 GB)",
	Verified: true,
}
