package tdxmodule

import "github.com/tdxsim/tdxsim/addr"

// What the external tests (package tdxmodule_test, which drive the module
// through tdxcall) need of the module's internals.

var (
	BlockedOf   = blockedOf
	UnblockedOf = unblockedOf
	IsBlocked   = isBlocked
	IsLeafState = isLeafState
)

// HasPAMTPair reports whether the 2M range holding p has a Dynamic PAMT
// page pair installed.
func (m *Module) HasPAMTPair(p addr.PFN) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.node2M(p).pt == PTPAMT
}

// TDVPX returns the vCPU's TDVPX pages.
func (v *VCPU) TDVPX() []addr.PFN { return v.tdvpx }
