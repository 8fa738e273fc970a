package tdhost

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/event"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/internal/mrtdvec"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

func newHost(t testing.TB, dpamt bool, sink event.Sink) *Host {
	mem, err := hostmem.New(hostmem.Config{Bytes: 2 << 30}, sink)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := tdxmodule.New(mem, tdxmodule.Config{DynamicPAMT: dpamt, Packages: 2}, sink)
	if err != nil {
		t.Fatal(err)
	}
	return New(mem, mod)
}

// handMRTD converts regions for the independent hand computation.
func handMRTD(regions []Region) []byte {
	var rs []mrtdvec.Region
	for _, r := range regions {
		rs = append(rs, mrtdvec.Region{GPA: uint64(r.GPA), Data: r.Data, Measure: r.Measure})
	}
	return mrtdvec.Hand(rs)
}

// build creates a TD with vcpus vCPUs, adds the test image and finalizes it.
func build(th *sched.Thread, h *Host, name string, vcpus int) (*TD, []byte, error) {
	td, err := h.Create(th, name, vcpus)
	if err != nil {
		return nil, nil, err
	}
	if err := td.AddImage(th, image()); err != nil {
		return nil, nil, err
	}
	mrtd, err := td.Finalize(th)
	return td, mrtd, err
}

func image() []Region {
	fw := bytes.Repeat([]byte("TDVF"), 2048+100) // 2 pages + a partial third
	return []Region{
		{GPA: 0xFFC00000 - 0x400000, Data: fw, Measure: true},
		{GPA: 0x800000, Data: []byte{1, 2, 3}, Measure: false},
	}
}

func TestMRTDMatchesHandComputedVector(t *testing.T) {
	h := newHost(t, false, nil)
	var got []byte
	s := sched.New(sched.Deterministic, 1, nil)
	s.Go("vmm", func(th *sched.Thread) {
		var err error
		if _, got, err = build(th, h, "td", 1); err != nil {
			t.Error(err)
		}
	})
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	want := handMRTD(image())
	if !bytes.Equal(got, want) || len(got) != 48 {
		t.Fatalf("MRTD\n got %x\nwant %x", got, want)
	}
}

// lifecycle builds, runs (two vCPUs accepting concurrently) and tears down
// a TD, and checks that nothing leaks.
func lifecycle(t *testing.T, seed uint64, dpamt bool) (*event.Counter, *Host) {
	c := event.NewCounter()
	h := newHost(t, dpamt, c)
	freeBefore := h.Mem.FreePages()
	s := sched.New(sched.Deterministic, seed, c)
	const size = 2 << 20
	s.Go("vmm", func(th *sched.Thread) {
		td, _, err := build(th, h, "td1", 2)
		if err != nil {
			t.Error(err)
			return
		}
		done := make([]bool, 2)
		for i := 0; i < 2; i++ {
			th.Go(fmt.Sprintf("vcpu%d", i), func(vt *sched.Thread) {
				// Both vCPUs accept overlapping halves: AUG races happen.
				if err := td.AcceptRange(vt, i, addr.GPA(0x1000000+i*size/4), size); err != nil {
					t.Error(err)
				}
				done[i] = true
			})
		}
		th.WaitUntil("vCPUs done", func() bool { return done[0] && done[1] })
		for g := addr.GPA(0x1000000); g < 0x1000000+16*addr.PageSize; g += addr.PageSize {
			if err := td.RemovePage(th, g); err != nil {
				t.Error(err)
				return
			}
		}
		n, err := td.Teardown(th)
		if err != nil {
			t.Error(err)
			return
		}
		if n == 0 {
			t.Error("nothing reclaimed")
		}
		if u := h.Mem.Usage(td.Acct); u != (hostmem.Usage{}) {
			t.Errorf("after teardown the TD's account still holds %+v", u)
		}
	})
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	if v := c.Violations(); len(v) > 0 {
		t.Fatalf("violations: %v", v)
	}
	if h.Mem.FreePages() != freeBefore {
		t.Fatalf("host pages leaked: %d free, %d before", h.Mem.FreePages(), freeBefore)
	}
	if r := s.LockDep().Reports(); len(r) > 0 {
		t.Fatalf("lockdep: %v", r)
	}
	return c, h
}

func TestLifecycleNoLeak(t *testing.T) {
	for _, dpamt := range []bool{false, true} {
		c, h := lifecycle(t, 1, dpamt)
		calls := c.Calls()
		if calls["TDH.MEM.PAGE.ADD"] != 4 || calls["TDH.MR.EXTEND"] != 3*16 {
			t.Errorf("dpamt=%v: PAGE.ADD %d MR.EXTEND %d", dpamt, calls["TDH.MEM.PAGE.ADD"], calls["TDH.MR.EXTEND"])
		}
		// 2 MiB + 1/4 overlap: 640 distinct 4K pages are AUGed once each.
		if calls["TDH.MEM.PAGE.AUG"] < 640 {
			t.Errorf("dpamt=%v: %d AUGs", dpamt, calls["TDH.MEM.PAGE.AUG"])
		}
		if calls["TDH.MEM.PAGE.REMOVE"] != 16 || calls["TDH.PHYMEM.PAGE.WBINVD"] != 16 {
			t.Errorf("dpamt=%v: removes %d", dpamt, calls["TDH.MEM.PAGE.REMOVE"])
		}
		if p := h.Mod.PAMT(); dpamt && p.Dynamic != 0 || p.Static == 0 {
			t.Errorf("dpamt=%v: PAMT after teardown %+v", dpamt, p)
		}
	}
}

func TestLifecycleManySeeds(t *testing.T) {
	n := uint64(40)
	if testing.Short() {
		n = 5
	}
	for seed := uint64(0); seed < n; seed++ {
		lifecycle(t, seed, seed%2 == 0)
	}
}
