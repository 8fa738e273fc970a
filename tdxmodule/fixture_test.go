package tdxmodule_test

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/tdxcall"
	. "github.com/tdxsim/tdxsim/tdxmodule"
)

// fx is a small host with a TD built step by step, driven without a
// scheduler (nil thread: no yields).
// tb is what the fixture needs of *testing.T and *rapid.T.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

type fx struct {
	t     tb
	mem   *hostmem.Memory
	m     *Module
	c     *event.Counter
	tdr   addr.PFN
	tdcs  []addr.PFN
	vcpu  addr.PFN
	hkid  int
	sept  map[[2]uint64]addr.PFN
	dpamt bool
}

func newFx(t tb, cfg Config) *fx {
	t.Helper()
	c := event.NewCounter()
	mem, err := hostmem.New(hostmem.Config{Bytes: 1 << 30}, c)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(mem, cfg, c)
	if err != nil {
		t.Fatal(err)
	}
	return &fx{t: t, mem: mem, m: m, c: c, hkid: 1, sept: map[[2]uint64]addr.PFN{}, dpamt: cfg.DynamicPAMT}
}

// page allocates a 4K page (with its DPAMT pair when needed).
func (f *fx) page() addr.PFN {
	f.t.Helper()
	p, err := f.mem.Alloc(nil, hostmem.Request{Order: 0, Source: hostmem.SourceBuddy})
	if err != nil {
		f.t.Fatal(err)
	}
	f.pair(p)
	return p
}

func (f *fx) pair(p addr.PFN) {
	if !f.dpamt {
		return
	}
	if f.m.HasPAMTPair(p) {
		return
	}
	var pr [2]addr.PFN
	for i := range pr {
		q, _ := f.mem.Alloc(nil, hostmem.Request{Order: 0, Source: hostmem.SourceBuddy})
		pr[i] = q
	}
	if st := first(tdxcall.PhymemPAMTAdd(f.m, nil, p, pr)); st != Success {
		f.t.Fatalf("PAMT.ADD: %v", st)
	}
}

func (f *fx) huge() addr.PFN {
	f.t.Helper()
	p, err := f.mem.Alloc(nil, hostmem.Request{Order: 9, Source: hostmem.SourceBuddy})
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fx) ok(what string, st Status) {
	f.t.Helper()
	if st != Success {
		f.t.Fatalf("%s: %v", what, st)
	}
}

// created: TDR + HKID + keys + TDCS.
func (f *fx) created() *fx {
	f.tdr = f.page()
	f.ok("MNG.CREATE", first(tdxcall.MngCreate(f.m, nil, f.tdr, f.hkid)))
	for p := 0; p < f.m.Config().Packages; p++ {
		f.ok("KEY.CONFIG", first(tdxcall.MngKeyConfig(f.m, nil, f.tdr, p)))
	}
	for i := 0; i < f.m.Config().TDCSPages; i++ {
		p := f.page()
		f.tdcs = append(f.tdcs, p)
		f.ok("ADDCX", first(tdxcall.MngAddCX(f.m, nil, f.tdr, p)))
	}
	return f
}

// initialized: MNG.INIT and one initialised vCPU.
func (f *fx) initialized() *fx {
	f.created()
	f.ok("MNG.INIT", first(tdxcall.MngInit(f.m, nil, f.tdr, 4, 8)))
	f.vcpu = f.page()
	f.ok("VP.CREATE", first(tdxcall.VPCreate(f.m, nil, f.tdr, f.vcpu)))
	for i := 0; i < f.m.Config().TDVPSPages-1; i++ {
		f.ok("VP.ADDCX", first(tdxcall.VPAddCX(f.m, nil, f.vcpu, f.page())))
	}
	f.ok("VP.INIT", first(tdxcall.VPInit(f.m, nil, f.vcpu)))
	return f
}

func (f *fx) runnable() *fx {
	f.initialized()
	f.ok("FINALIZE", first(tdxcall.MrFinalize(f.m, nil, f.tdr)))
	return f
}

// septTo adds S-EPT pages so that gpa can be mapped at level leaf.
func (f *fx) septTo(gpa addr.GPA, leaf addr.Level) {
	f.t.Helper()
	for l := addr.Level(3); l > leaf; l-- {
		key := [2]uint64{uint64(l), uint64(gpa) >> (12 + 9*uint(l))}
		if _, ok := f.sept[key]; ok {
			continue
		}
		p := f.page()
		base := addr.GPA(key[1] << (12 + 9*uint(l)))
		st, _ := tdxcall.MemSEPTAdd(f.m, nil, f.tdr, base, l, p)
		f.ok("SEPT.ADD", st)
		f.sept[key] = p
	}
}

// aug maps a fresh page at gpa/level (PENDING).
func (f *fx) aug(gpa addr.GPA, level addr.Level) addr.PFN {
	f.t.Helper()
	f.septTo(gpa, level)
	var p addr.PFN
	if level == 0 {
		p = f.page()
	} else {
		p = f.huge()
	}
	st, _ := tdxcall.MemPageAug(f.m, nil, f.tdr, gpa, level, p)
	f.ok("AUG", st)
	return p
}

func (f *fx) state(gpa addr.GPA) (addr.Level, uint8) {
	e, _ := f.m.Lookup(f.tdr, gpa)
	return e.Level, e.State
}

func (f *fx) enter() *VCPU {
	f.ok("VP.ENTER", first(tdxcall.VPEnter(f.m, nil, f.vcpu)))
	return f.m.VCPU(f.vcpu)
}

func hostmemReq(order addr.Order) hostmem.Request {
	return hostmem.Request{Order: order, Source: hostmem.SourceBuddy}
}
