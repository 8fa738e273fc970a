package hostmem

// Rule names: what an Error's Rule and a violation event's Name carry
// when host memory refuses an operation. The check package maps them to
// invariants (check.EventInvariant); tests match on them. A name is
// only ever written here.
const (
	// RuleRange: a PFN outside host memory.
	RuleRange = "hostmem.range"
	// RuleDoubleFree: a free of a page that is already free.
	RuleDoubleFree = "hostmem.double-free"
	// RuleNotHead: a free of a page that does not start an allocation.
	RuleNotHead = "hostmem.not-head"
	// RuleWrongSource: a free to a pool other than the one the page came
	// from (a cache's page returned to the buddy allocator, say).
	RuleWrongSource = "hostmem.wrong-source"
	// RuleFreeReferenced: a free of a page others still hold references on.
	RuleFreeReferenced = "hostmem.free-referenced"
	// RulePartialHuge: a free of part of a huge page.
	RulePartialHuge = "hostmem.partial-huge"
	// RuleFreeTDXOwned: a free of a page the TDX module still has
	// assigned to a TD (the PAMT vetoes it).
	RuleFreeTDXOwned = "hostmem.free-tdx-owned"
	// RuleRefUnderflow: a reference dropped that was never taken.
	RuleRefUnderflow = "hostmem.ref-underflow"
	// RuleSplitMappedHuge: a huge folio split while a huge S-EPT leaf
	// maps it.
	RuleSplitMappedHuge = "hostmem.split-mapped-huge"
	// RuleWriteUnallocated: a write to a free page.
	RuleWriteUnallocated = "hostmem.write-unallocated"
	// RuleReadUnallocated: a copy from a free page.
	RuleReadUnallocated = "hostmem.read-unallocated"
)
