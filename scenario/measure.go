package scenario

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/report"
)

// Invariant checks a run makes. Each is counted once per time it runs;
// a failure adds violations naming the objects involved.
const (
	checkMirrorSEPT = "mirror_sept_agree"     // every mirror leaf is the S-EPT leaf at that GPA (level, HPA), after each step
	checkDPAMT      = "dpamt_refcounts"       // DPAMT pairs exist exactly where 4K private pages need them, with those refcounts, after each step
	checkGuest      = "guest_reads_back"      // the guest read what it wrote, or zero after accept
	checkEvents     = "no_violation_events"   // no layer reported a broken rule
	checkLockdep    = "lock_order"            // no lock-order cycle or sleep in atomic context
	checkBug        = "no_kvm_bug"            // no KVM_BUG_ON
	checkTeardown   = "teardown_reclaims_all" // after teardown nothing leaked, charged, or holding an HKID or a DPAMT pair
)

func (rn *runner) check(name string, ok bool, violations ...string) {
	c, seen := rn.checks[name]
	if !seen {
		rn.order = append(rn.order, name)
	}
	c[0]++
	if !ok {
		c[1]++
		for _, v := range violations {
			if len(rn.r.Violations) < 100 {
				rn.r.Violations = append(rn.r.Violations, name+": "+v)
			}
		}
	}
	rn.checks[name] = c
}

// sample records peaks at a step boundary and runs the per-step checks.
func (rn *runner) sample() {
	mod := rn.host.Mod
	p := mod.PAMT()
	rn.pamtPeak, rn.pamtStatic = max(rn.pamtPeak, p.Total()), p.Static
	rn.pamtDynPeak = max(rn.pamtDynPeak, p.Dynamic)
	rn.dpamtPeak = max(rn.dpamtPeak, rn.host.DPAMTRanges())
	var pt int64
	need := map[addr.PFN]int32{}
	for _, td := range rn.tds {
		if td.m == nil || td.torn {
			continue
		}
		if info, ok := mod.TD(td.m.TD.TDR()); ok {
			td.septPeak = max(td.septPeak, info.SEPTPages)
		}
		u := rn.host.Mem.Usage(td.m.VM.Account())
		td.charged = max(td.charged, (u.Charged+u.Uncharged)*addr.PageSize)
		st := td.m.TD.MMU().Stats()
		pt += st.PageTables[0] + st.PageTables[1]
		var bad []string
		td.m.TD.MMU().Leaves(true, func(l mmu.Leaf) bool {
			ent, ok := mod.Lookup(td.m.TD.TDR(), l.GFN.GPA())
			if !ok || ent.Level != l.Level || ent.HPA != l.PFN.HPA() {
				bad = append(bad, fmt.Sprintf("%s: mirror maps %s %s at %s, S-EPT has %s at %s", td.spec.Name, l.GFN.GPA(), l.Level, l.PFN.HPA(), ent.Level, ent.HPA))
			}
			return len(bad) < 5
		})
		rn.check(checkMirrorSEPT, len(bad) == 0, bad...)
		for r, n := range td.m.TD.DPAMTNeeded() {
			need[r] += n
		}
	}
	rn.ptPeak = max(rn.ptPeak, pt)
	if *rn.f.Policies.DynamicPAMT {
		var bad []string
		if got := rn.host.DPAMTRanges(); got != len(need) {
			bad = append(bad, fmt.Sprintf("%d 2 MiB ranges hold a DPAMT pair, %d need one", got, len(need)))
		}
		keys := make([]addr.PFN, 0, len(need))
		for r := range need {
			keys = append(keys, r)
		}
		slices.Sort(keys)
		for _, r := range keys {
			if got := rn.host.DPAMTRef(r << 9); got != need[r] && len(bad) < 5 {
				bad = append(bad, fmt.Sprintf("range %s: refcount %d, want %d", (r<<9).HPA(), got, need[r]))
			}
		}
		rn.check(checkDPAMT, len(bad) == 0, bad...)
	}
}

// finish fills the report after the scheduler stopped.
func (rn *runner) finish(leaked int64) {
	r := rn.r
	r.Steps = rn.s.Steps()
	r.Seamcalls, r.Tdcalls = report.SplitCalls(rn.count)
	r.SeamcallsFailed = rn.count.Failed()
	r.SeamcallNS = rn.clock.ByLeaf()
	r.PageCacheTopUps = rn.clock.TopUps()
	r.Mappings, r.MappingsPeak = map[string]int64{}, map[string]int64{}
	r.Splits = map[string]int64{"2M": 0, "1G": 0}
	r.Guest.Accepts = map[string]int64{}
	r.MRTDs = map[string]string{}
	r.Memory = report.Memory{PAMTBytes: rn.pamtPeak, PAMTStaticBytes: rn.pamtStatic, PAMTDynamicBytes: rn.pamtDynPeak,
		DPAMTRanges: rn.dpamtPeak, PageTables: rn.ptPeak, ChargedBytes: map[string]uint64{}, ChargedBytesEnd: map[string]uint64{}}
	for _, name := range report.LevelNames {
		r.Mappings[name], r.MappingsPeak[name], r.Guest.Accepts[name] = 0, 0, 0
	}
	var problems []string
	for _, td := range rn.tds {
		if td.m != nil {
			u := rn.host.Mem.Usage(td.m.VM.Account())
			td.chargedEnd = (u.Charged + u.Uncharged) * addr.PageSize
		}
		t := report.TD{Name: td.spec.Name, MemoryBytes: uint64(td.spec.Memory), VCPUs: td.spec.VCPUs, MRTD: hex.EncodeToString(td.mrtd),
			Mappings: map[string]int64{}, MappingsPeak: map[string]int64{}, SEPTPages: td.septPeak,
			Splits: map[string]int64{"2M": td.mmuStats.Splits[1], "1G": td.mmuStats.Splits[2]}, ChargedBytes: td.charged,
			Conversions: report.Conversions{ToShared: td.vmmStats.ToShared, ToPrivate: td.vmmStats.ToPrivate,
				BytesToShared: td.vmmStats.BytesToShared, BytesToPrivate: td.vmmStats.BytesToPrivate, PunchedBytes: td.vmmStats.PunchedBytes},
			Bugged: td.bugged}
		for l, name := range report.LevelNames {
			// Mappings at the end: read right before teardown zapped them.
			t.Mappings[name] = td.mappedEnd[l]
			t.MappingsPeak[name] = td.mmuStats.PeakMapped[1][l]
			r.MappingsPeak[name] += t.MappingsPeak[name]
		}
		r.SharedPeak += td.mmuStats.PeakMapped[0][0] + td.mmuStats.PeakMapped[0][1] + td.mmuStats.PeakMapped[0][2]
		r.Splits["2M"] += t.Splits["2M"]
		r.Splits["1G"] += t.Splits["1G"]
		r.Memory.SEPTPages += td.septPeak
		r.Memory.ChargedBytes[td.spec.Name] = td.charged
		r.Memory.ChargedBytesEnd[td.spec.Name] = td.chargedEnd
		c := &r.Conversions
		c.ToShared += t.Conversions.ToShared
		c.ToPrivate += t.Conversions.ToPrivate
		c.BytesToShared += t.Conversions.BytesToShared
		c.BytesToPrivate += t.Conversions.BytesToPrivate
		c.PunchedBytes += t.Conversions.PunchedBytes
		f := &r.Faults
		f.EPTViolations += td.tdStats.EPTViolations
		f.Fixed += td.mmuStats.Fixed
		f.Retries += td.mmuStats.Retries
		f.BusyRetries += td.tdStats.BusyRetries
		r.Teardown.SEPTPagesReclaimed += td.tdStats.SEPTPagesReclaimed
		r.Teardown.ControlPagesReclaimed += td.tdStats.ControlPagesReclaimed
		r.Teardown.ChargedAfter += td.chargedEnd / addr.PageSize
		if td.g != nil {
			gs := td.g.Stats()
			for l, name := range report.LevelNames {
				r.Guest.Accepts[name] += gs.Accepts[l]
			}
			r.Guest.SizeMismatch += gs.SizeMismatch
			r.Guest.LazyAccepts += gs.LazyAccepts
			r.Guest.Touches += gs.Touches
			r.Guest.SharedTouches += gs.SharedTouches
			for _, p := range td.g.Problems() {
				problems = append(problems, td.spec.Name+": "+p)
			}
		}
		if len(td.mrtd) > 0 {
			r.MRTDs[td.spec.Name] = t.MRTD
			if r.MRTD == "" {
				r.MRTD = t.MRTD
			}
		}
		r.TDs = append(r.TDs, t)
		rn.check(checkBug, td.bugged == "", fmt.Sprintf("%s: %s", td.spec.Name, td.bugged))
	}
	rn.mappingsAtEnd()
	rn.check(checkGuest, len(problems) == 0, problems...)
	var evs []string
	for _, v := range rn.count.Violations() {
		evs = append(evs, v.Name+": "+v.Detail)
	}
	rn.check(checkEvents, len(evs) == 0, evs...)
	var locks []string
	for _, l := range rn.s.LockDep().Reports() {
		locks = append(locks, l.String())
	}
	rn.check(checkLockdep, len(locks) == 0, locks...)
	r.Teardown.LeakedPages = leaked
	var td []string
	if leaked != 0 {
		td = append(td, fmt.Sprintf("%d host pages not back in the allocator", leaked))
	}
	if r.Teardown.ChargedAfter != 0 {
		td = append(td, fmt.Sprintf("%d pages still charged", r.Teardown.ChargedAfter))
	}
	if n := rn.host.HKIDsInUse(); n != 0 {
		td = append(td, fmt.Sprintf("%d HKIDs still assigned", n))
	}
	if n := rn.host.DPAMTRanges(); n != 0 {
		td = append(td, fmt.Sprintf("%d DPAMT pairs still installed", n))
	}
	rn.check(checkTeardown, len(td) == 0, td...)
	for _, name := range rn.order {
		c := rn.checks[name]
		r.Checks.Run += c[0]
		r.Checks.Passed += c[0] - c[1]
		r.Checks.Names = append(r.Checks.Names, name)
	}
	rn.phases()
	rn.expectations()
}

// mappingsAtEnd sums the TDs' private leaves at the end of the timeline
// (before the final teardown).
func (rn *runner) mappingsAtEnd() {
	for _, td := range rn.r.TDs {
		for k, v := range td.Mappings {
			rn.r.Mappings[k] += v
		}
	}
}

func (rn *runner) phases() {
	r := rn.r
	r.Phases = rn.clock.Phases()
	r.ModeledNS = map[string]uint64{}
	for _, p := range r.Phases {
		kind := p.Name // "3 convert" -> "convert"
		if _, k, ok := strings.Cut(kind, " "); ok {
			kind = k
		}
		r.ModeledNS[kind] += p.ModeledNS
		r.ModeledNS["total"] += p.ModeledNS
	}
	r.ModeledNSByThread = rn.clock.ByThread()
}

func (rn *runner) expectations() {
	e := rn.f.Expect
	for _, name := range sortedKeys(e.MRTD) {
		got := rn.r.MRTDs[name]
		rn.expect("mrtd "+name, got == e.MRTD[name] || bytesEqualHex(got, e.MRTD[name]), "got "+got)
	}
	var total uint64
	for _, v := range rn.r.Seamcalls {
		total += v
	}
	for _, k := range sortedKeys(e.Seamcalls) {
		b := e.Seamcalls[k]
		n := rn.r.Seamcalls[k]
		if k == "total" {
			n = total
		}
		ok := (b.Min == nil || n >= *b.Min) && (b.Max == nil || n <= *b.Max)
		rn.expect(fmt.Sprintf("seamcalls %s in %s", k, bound(b)), ok, fmt.Sprintf("got %d", n))
	}
}

func bytesEqualHex(a, b string) bool {
	x, err1 := hex.DecodeString(a)
	y, err2 := hex.DecodeString(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

func bound(b Bound) string {
	lo, hi := "0", "inf"
	if b.Min != nil {
		lo = fmt.Sprint(*b.Min)
	}
	if b.Max != nil {
		hi = fmt.Sprint(*b.Max)
	}
	return "[" + lo + ", " + hi + "]"
}
