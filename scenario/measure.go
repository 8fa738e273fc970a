package scenario

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/kernel"
	"github.com/tdxsim/tdxsim/report"
)

// check records one evaluation of invariant inv at step at: it passed
// when vs is empty; otherwise each violation joins the report, prefixed
// with the step.
func (rn *runner) check(at, inv string, vs ...string) {
	c, seen := rn.checks[inv]
	if !seen {
		rn.order = append(rn.order, inv)
	}
	c[0]++
	if len(vs) > 0 {
		c[1]++
		rn.r.ViolationsTotal += len(vs)
		for _, v := range vs {
			if len(rn.r.Violations) < report.MaxViolations {
				rn.r.Violations = append(rn.r.Violations, fmt.Sprintf("%s at %s: %s", inv, at, v))
			}
		}
	}
	rn.checks[inv] = c
}

// world is what the cross-layer checks see: the TDs not torn down.
func (rn *runner) world() check.World {
	w := check.World{Host: rn.host, DynamicPAMT: *rn.f.Policies.DynamicPAMT}
	for _, td := range rn.tds {
		if td.m != nil && !td.torn {
			w.TDs = append(w.TDs, check.TD{Name: td.spec.Name, VM: td.m.VM, TD: td.m.TD, Gmem: td.m.Gmem})
		}
		w.DeadTornDown = w.DeadTornDown || td.torn && td.bugged != ""
	}
	return w
}

// sample records peaks at a step boundary and runs the per-step checks.
func (rn *runner) sample(at string) {
	mod := rn.host.Mod
	p := mod.PAMT()
	rn.pamtPeak, rn.pamtStatic = max(rn.pamtPeak, p.Total()), p.Static
	rn.pamtDynPeak = max(rn.pamtDynPeak, p.Dynamic)
	rn.dpamtPeak = max(rn.dpamtPeak, rn.host.DPAMTRanges())
	var pt int64
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
	}
	rn.ptPeak = max(rn.ptPeak, pt)
	var res check.Result
	if !rn.o.NoStepChecks {
		res = check.Step(rn.world())
	}
	for _, inv := range res.Ran {
		var vs []string
		for _, v := range res.Violations {
			if v.Invariant == inv {
				vs = append(vs, strings.TrimPrefix(v.String(), inv+": "))
			}
		}
		rn.check(at, inv, vs...)
	}
	rn.newReports(at)
}

// newReports turns what the layers reported since the last call (rule
// violations, lock-order reports, guest problems) into check results at
// step at.
func (rn *runner) newReports(at string) {
	var rep check.Reported
	evs := rn.count.Violations()
	for _, e := range evs[min(rn.seenEvents, len(evs)):] {
		if !rn.resp.Excused(e) { // guest_memfd freeing a page a TD killed by an injected fault maps
			rep.Events = append(rep.Events, e)
		}
	}
	rn.seenEvents = len(evs)
	locks := rn.s.LockDep().Reports()
	for _, l := range locks[min(rn.seenLocks, len(locks)):] {
		rep.LockOrder = append(rep.LockOrder, l.String())
	}
	rn.seenLocks = len(locks)
	for _, td := range rn.tds {
		if td.g == nil {
			continue
		}
		ps := td.g.Problems()
		for _, p := range ps[min(td.seenProblems, len(ps)):] {
			rep.Guest = append(rep.Guest, td.spec.Name+": "+p)
		}
		td.seenProblems = len(ps)
	}
	for _, g := range check.Reports(rep) {
		rn.check(at, g.Invariant, g.Violations...)
	}
}

// finish fills the report after the scheduler stopped.
func (rn *runner) finish(leaked int64) {
	r := rn.r
	r.Steps = rn.s.Steps()
	if !rn.o.Parallel {
		r.Schedule = fmt.Sprintf("%016x", rn.s.ScheduleHash())
	}
	r.Seamcalls, r.Tdcalls = report.SplitCalls(rn.count)
	if len(rn.hostileOps) > 0 {
		r.Hostile = rn.hostileOps
	}
	if rn.inj != nil {
		st := rn.inj.Stats()
		r.Injected = map[string]uint64{report.InjectedBusy: st.Busy, report.InjectedAllocFailed: st.AllocsFailed}
		for what, n := range st.Failed {
			r.Injected[what] = n
		}
		if st.BusyEndedByKick > 0 {
			// BUSYs a contender would have caused, not injected: the
			// kernel had kicked the TD's vCPUs out (tdh_do_no_vcpus).
			r.Injected["busy ended by kick"] = st.BusyEndedByKick
		}
		for kind, n := range st.BusyByContender {
			r.Injected["busy by "+kind] = n // the contender each BUSY models
		}
		for what, n := range map[string]uint64{"busy ended by retry": st.BusyEndedByRetry,
			"busy without contender (not injected)": st.BusyNoContender, "busy module bug": st.BusyModuleBug} {
			if n > 0 {
				r.Injected[what] = n
			}
		}
	}
	r.SeamcallsFailed = rn.count.Failed()
	r.SeamcallNS = rn.clock.ByLeaf()
	r.PageCacheTopUps = rn.clock.TopUps()
	r.Mappings, r.MappingsPeak = map[string]int64{}, map[string]int64{}
	r.Splits = map[string]int64{"2M": 0, "1G": 0}
	r.Guest.Accepts = map[string]int64{}
	r.Guest.Accepts4KWhere2MByVCPU = map[string]int64{}
	r.MRTDs = map[string]string{}
	r.Memory = report.Memory{PAMTBytes: rn.pamtPeak, PAMTStaticBytes: rn.pamtStatic, PAMTDynamicBytes: rn.pamtDynPeak,
		DPAMTRanges: rn.dpamtPeak, PageTables: rn.ptPeak, ChargedBytes: map[string]uint64{}, ChargedBytesEnd: map[string]uint64{}}
	rn.refcounts(&r.Memory)
	for _, name := range report.LevelNames {
		r.Mappings[name], r.MappingsPeak[name], r.Guest.Accepts[name] = 0, 0, 0
	}
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
		if len(td.firmware) > 0 {
			t.Firmware, t.FirmwareSections = td.spec.Firmware, firmwareSections(td.firmware)
		}
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
		r.Conversions.Add(t.Conversions)
		f := &r.Faults
		f.EPTViolations += td.tdStats.EPTViolations
		f.Fixed += td.mmuStats.Fixed
		f.Retries += td.mmuStats.Retries
		f.BusyRetries += td.tdStats.BusyRetries
		f.WriteLocks += td.tdStats.FaultWriteLocks
		if td.m != nil {
			for _, v := range td.m.VCPUs {
				if n := v.Accept4KWhere2M(); n > 0 {
					r.Guest.Accepts4KWhere2M += n
					r.Guest.Accepts4KWhere2MByVCPU[fmt.Sprintf("%s/vcpu%d", td.spec.Name, v.ID())] = n
				}
			}
		}
		r.Teardown.SEPTPagesReclaimed += td.tdStats.SEPTPagesReclaimed
		r.Teardown.ControlPagesReclaimed += td.tdStats.ControlPagesReclaimed
		if pr := td.tdStats.PrivateReclaimed; pr != [3]int64{} {
			if r.Teardown.PrivateReclaimed == nil {
				r.Teardown.PrivateReclaimed = map[string]int64{}
			}
			for l, name := range report.LevelNames {
				r.Teardown.PrivateReclaimed[name] += pr[l]
			}
		}
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
		}
		if len(td.mrtd) > 0 {
			r.MRTDs[td.spec.Name] = t.MRTD
			if r.MRTD == "" {
				r.MRTD = t.MRTD
			}
		}
		r.TDs = append(r.TDs, t)
		rn.check("end", check.NoKVMBug, check.KVMBugFree(td.spec.Name, rn.uncausedBug(td))...)
	}
	rn.mappingsAtEnd()
	r.Mappings2MEnd = r.Mappings["2M"]
	rn.newReports(rn.phase)
	r.Teardown.LeakedPages = leaked
	l := check.Leftovers{LeakedPages: leaked, ChargedPages: r.Teardown.ChargedAfter,
		HKIDsInUse: rn.host.HKIDsInUse(), DPAMTPairs: rn.host.DPAMTRanges()}
	l.LeakedOnPurpose, l.HKIDsLeaked = rn.leakedOnPurpose()
	for _, td := range rn.tds {
		l.Bugged = l.Bugged || td.bugged != ""
	}
	if l.Bugged {
		l.HeldByModule = rn.host.Mod.HeldPages()
		r.Teardown.HeldByModule = l.HeldByModule
	}
	rn.check("end", check.Teardown, check.TeardownReclaimsAll(l)...)
	r.Teardown.LeakedOnPurpose = l.OnPurpose()
	r.Checks.Failed = map[string]int{}
	for _, name := range rn.order {
		c := rn.checks[name]
		r.Checks.Run += c[0]
		r.Checks.Passed += c[0] - c[1]
		r.Checks.Names = append(r.Checks.Names, name)
		if c[1] > 0 {
			r.Checks.Failed[name] = c[1]
		}
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

// refcounts fills the kernel's Dynamic PAMT refcount array: sized by the
// kernel profile (kernel.RefcountArrayBytes) for host.memory of RAM from 0
// and host.max_pfn (default: host.memory).
func (rn *runner) refcounts(m *report.Memory) {
	h := rn.f.Host
	m.MaxPFNBytes = uint64(max(h.MaxPFN, h.Memory))
	if !*rn.f.Policies.DynamicPAMT {
		m.RefcountArray = kernel.RefcountNone.String()
		return
	}
	layout := rn.f.Profile().Refcounts
	if layout == kernel.RefcountNone {
		layout = kernel.RefcountSparse // the default profile's Dynamic PAMT v4
	}
	m.RefcountArray = layout.String()
	m.PAMTRefcountBytes = kernel.RefcountArrayBytes(layout, uint64(h.Memory), m.MaxPFNBytes)
}
