package tdx

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/sched"
)

// PAMTGet and PAMTPut let the tests race tdx_pamt_get()/tdx_pamt_put()
// on one range directly.
func (h *Host) PAMTGet(t *sched.Thread, pfn addr.PFN, acct hostmem.Account) error {
	return h.pamtGet(t, pfn, nil, acct)
}

func (h *Host) PAMTPut(t *sched.Thread, pfn addr.PFN) error { return h.pamtPut(t, pfn) }
