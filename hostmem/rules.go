package hostmem

// Rule names: an Error's Rule and, for the ones that are violations, the
// event.KindViolation name hostmem emits. check maps them to invariants.
const (
	RuleRange            = "hostmem.range"
	RuleNotHead          = "hostmem.not-head"
	RulePartialHuge      = "hostmem.partial-huge"
	RuleDoubleFree       = "hostmem.double-free"
	RuleWrongSource      = "hostmem.wrong-source"
	RuleFreeReferenced   = "hostmem.free-referenced"
	RuleFreeTDXOwned     = "hostmem.free-tdx-owned"
	RuleRefUnderflow     = "hostmem.ref-underflow"
	RuleSplitMappedHuge  = "hostmem.split-mapped-huge"
	RuleWriteUnallocated = "hostmem.write-unallocated"
	RuleReadUnallocated  = "hostmem.read-unallocated"
)
