package mmu

// Rule names a violation event of this package carries (event.Event.Name
// for event.KindViolation). The first two count under the check package's
// no_violation_events; tests match on them.
const (
	// RuleLockNotHeld: an SPTE change that needs mmu_lock held for write
	// made with it held for read or not at all, or an atomic one made
	// without it (the kernel's lockdep_assert_held_write(&kvm->mmu_lock)
	// and lockdep_assert_held_read(&kvm->mmu_lock)).
	RuleLockNotHeld = "mmu.lock-not-held"
	// RuleCacheEmpty: a page taken from a per-vCPU or split cache that
	// was not topped up enough (the kernel's kvm_mmu_memory_cache_alloc()
	// WARNs and falls back to GFP_ATOMIC; the model fails with ENOMEM).
	RuleCacheEmpty = "mmu.cache-empty"
	// RuleHugeOverMixed: a huge private leaf installed over GFNs whose
	// memory attributes are not all private (the lpage_info MIXED flag of
	// kvm_arch_post_set_memory_attributes() forbids it). It counts under
	// mapping_level_allowed.
	RuleHugeOverMixed = "mmu.huge-over-mixed"
)
