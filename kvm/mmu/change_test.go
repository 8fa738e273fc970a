package mmu

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/internal/testkit"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/sched"
)

// hookCall is one call of an External hook made under mmu_lock, with the
// mirror entry it concerns as the hook saw it.
type hookCall struct {
	hook  string // "set", "link", "remove", "free", "split"
	gfn   addr.GFN
	level addr.Level
	entry string // the mirror SPTE at (gfn, level) during the call
}

func (c hookCall) String() string {
	return fmt.Sprintf("%s %#x@%s [%s]", c.hook, uint64(c.gfn), c.level, c.entry)
}

// fakeExternal is an External that changes nothing, records the hooks
// called under mmu_lock in order, and fails a hook on demand: fail[hook]
// is a queue of results, consumed one per call (nil: succeed). It is
// etcd-io/raft's nopStepper idea: the MMU's side of the mirror protocol
// checked without the TDX module.
type fakeExternal struct {
	m     *MMU
	calls []hookCall
	fail  map[string][]error
	max   addr.Level
}

var _ External = (*fakeExternal)(nil)

func (f *fakeExternal) record(hook string, gfn addr.GFN, level addr.Level) error {
	entry := "no table"
	if s, ok := f.m.entryAt(MirrorRoot, gfn, level); ok {
		entry = s.String()
	}
	f.calls = append(f.calls, hookCall{hook, gfn, level, entry})
	if q := f.fail[hook]; len(q) > 0 {
		f.fail[hook] = q[1:]
		return q[0]
	}
	return nil
}

func (f *fakeExternal) TopUpExternalCache(*sched.Thread, *VCPU) error { return nil }
func (f *fakeExternal) SetExternalSPTE(_ *sched.Thread, _ *VCPU, gfn addr.GFN, level addr.Level, _ addr.PFN) error {
	return f.record("set", gfn, level)
}
func (f *fakeExternal) LinkExternalSPT(_ *sched.Thread, _ *VCPU, gfn addr.GFN, level addr.Level, _ addr.PFN) error {
	return f.record("link", gfn, level)
}
func (f *fakeExternal) RemoveExternalSPTE(_ *sched.Thread, gfn addr.GFN, level addr.Level, _ addr.PFN) error {
	return f.record("remove", gfn, level)
}
func (f *fakeExternal) FreeExternalSPT(_ *sched.Thread, gfn addr.GFN, level addr.Level, _ addr.PFN) error {
	return f.record("free", gfn, level)
}
func (f *fakeExternal) SplitExternalSPTE(_ *sched.Thread, gfn addr.GFN, level addr.Level, _, _ addr.PFN) error {
	return f.record("split", gfn, level)
}
func (f *fakeExternal) TopUpSplitCache(*sched.Thread, int) error { return nil }
func (f *fakeExternal) PrivateMaxLevel() addr.Level              { return f.max }

// entryAt reads the entry at level on gfn's path in root r, whatever it
// holds (frozen, non-present); ok is false when no table at that level
// is on the path.
func (m *MMU) entryAt(r Root, gfn addr.GFN, level addr.Level) (SPTE, bool) {
	p := m.root(r)
	for p != nil && p.level > level {
		p = p.child(spteIndex(gfn, p.level))
	}
	if p == nil || p.level != level {
		return 0, false
	}
	return p.load(spteIndex(gfn, level)), true
}

// mirrorFixture is a software-protected VM whose MMU has a mirror root
// carried into fakeExternal: a 2 MiB HugeTLB guest_memfd slot of 8 MiB at
// GPA 0, the first 4 MiB private.
type mirrorFixture struct {
	th  *sched.Thread
	vm  *kvm.VM
	m   *MMU
	v   *VCPU
	ext *fakeExternal
}

func withMirror(t *testing.T, body func(f *mirrorFixture)) {
	t.Helper()
	kc := kvm.DefaultConfig()
	kc.HugeTLBGmem = true
	h := testkit.NewHost(t, testkit.Config{Bytes: 256 << 20, Huge2M: 8, KVM: &kc})
	h.Run(t, 1, func(th *sched.Thread) {
		vm, err := h.KVM.CreateVM(th, kvm.SWProtectedVM)
		if err != nil {
			t.Fatal(err)
		}
		ext := &fakeExternal{fail: map[string][]error{}, max: addr.Level2M}
		m, err := New(vm, Config{}, ext)
		if err != nil {
			t.Fatal(err)
		}
		ext.m = m
		sf := NewSlotFixture(t, th, h.Mem, vm, m, gmem.CreateArgs{Flags: gmem.FlagHugeTLB, PageOrder: addr.Order2M})
		body(&mirrorFixture{th: th, vm: vm, m: m, v: sf.VCPU, ext: ext})
		sf.Close(th, vm)
	})
}

func (f *mirrorFixture) fault(gpa uint64, maxLevel addr.Level) (Result, error) {
	return f.v.PageFault(f.th, addr.GPA(gpa), true, maxLevel)
}

// calls returns the hooks recorded since the last call and forgets them.
func (f *mirrorFixture) calls() []string {
	var s []string
	for _, c := range f.ext.calls {
		s = append(s, c.String())
	}
	f.ext.calls = nil
	return s
}

func (f *mirrorFixture) entry(gfn addr.GFN, level addr.Level) string {
	s, ok := f.m.entryAt(MirrorRoot, gfn, level)
	if !ok {
		return "no table"
	}
	return s.String()
}

var (
	errBusy = errno.New("fake", errno.EBUSY, "try again")
	errDead = errno.New("fake", errno.EIO, "KVM_BUG_ON")
)

// A private fault links the missing tables top-down and then maps the
// leaf; each hook runs with its mirror entry frozen, and a failed hook
// leaves the entry as it was (set_external_spte_present() writes old_spte
// back): EBUSY is RET_PF_RETRY, any other error goes to the caller. A
// table whose link failed is freed.
// Kernel: kvm_tdp_mmu_map(), tdp_mmu_link_sp(), set_external_spte_present().
func TestFaultHookOrder(t *testing.T) {
	const gpa, gfn = 0x10000, addr.GFN(0x10)
	linked := []string{
		"link 0x0@" + addr.Level(3).String() + " [FROZEN]",
		"link 0x0@" + addr.Level1G.String() + " [FROZEN]",
		"link 0x0@" + addr.Level2M.String() + " [FROZEN]",
	}
	set := "set 0x10@" + addr.Level4K.String() + " [FROZEN]"
	tests := []struct {
		name      string
		fail      map[string][]error
		wantRes   Result
		wantErr   error
		wantCalls []string
		wantLeaf  string // the 4K mirror entry afterwards
		wantPT    int64  // mirror page tables afterwards, root included
	}{
		{"maps", nil, RetFixed, nil, append(slices.Clone(linked), set), "present", 4},
		{"set busy retries", map[string][]error{"set": {errBusy}}, RetRetry, nil, append(slices.Clone(linked), set), "non-present", 4},
		{"set fails", map[string][]error{"set": {errDead}}, 0, errno.EIO, append(slices.Clone(linked), set), "non-present", 4},
		{"link busy retries", map[string][]error{"link": {nil, errBusy}}, RetRetry, nil, linked[:2], "no table", 2},
		{"link fails", map[string][]error{"link": {errDead}}, 0, errno.EIO, linked[:1], "no table", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			withMirror(t, func(f *mirrorFixture) {
				f.ext.fail = tc.fail
				res, err := f.fault(gpa, addr.Level4K)
				if res != tc.wantRes || (tc.wantErr == nil) != (err == nil) || (err != nil && !errors.Is(err, tc.wantErr)) {
					t.Errorf("fault = %v, %v; want %v, %v", res, err, tc.wantRes, tc.wantErr)
				}
				if got := f.calls(); !slices.Equal(got, tc.wantCalls) {
					t.Errorf("hooks:\n got  %q\n want %q", got, tc.wantCalls)
				}
				got := f.entry(gfn, addr.Level4K)
				if got != tc.wantLeaf && !(tc.wantLeaf == "present" && got == fmt.Sprintf("present %s", mustLookup(t, f.m, gfn).PFN)) {
					t.Errorf("4K mirror entry after the fault: %s, want %s", got, tc.wantLeaf)
				}
				if pt := f.m.Stats().PageTables[MirrorRoot]; pt != tc.wantPT {
					t.Errorf("%d mirror page tables, want %d", pt, tc.wantPT)
				}
				if tc.wantRes == RetRetry {
					// The retry succeeds and links only what is missing.
					if res, err := f.fault(gpa, addr.Level4K); res != RetFixed || err != nil {
						t.Errorf("retry: %v, %v", res, err)
					}
					if got := f.calls(); got[len(got)-1] != set {
						t.Errorf("retry's hooks %q do not end with %q", got, set)
					}
				}
			})
		})
	}
}

func mustLookup(t *testing.T, m *MMU, gfn addr.GFN) Leaf {
	t.Helper()
	l, ok := m.Lookup(MirrorRoot, gfn)
	if !ok {
		t.Fatalf("no mirror leaf at %s", gfn)
	}
	return l
}

// A zap writes the mirror leaf non-present first and then removes it from
// the S-EPT; a failing remove_external_spte is the hook's KVM_BUG_ON and
// the zap goes on to the next leaf. Page tables stay.
// Kernel: tdp_mmu_zap_leafs() -> tdp_mmu_iter_set_spte() ->
// tdp_mmu_set_spte() -> remove_external_spte().
func TestZapHookOrder(t *testing.T) {
	for _, fail := range []error{nil, errDead} {
		t.Run(fmt.Sprint(fail), func(t *testing.T) {
			withMirror(t, func(f *mirrorFixture) {
				for _, gpa := range []uint64{0x10000, 0x11000, 0x12000} {
					if res, err := f.fault(gpa, addr.Level4K); res != RetFixed || err != nil {
						t.Fatalf("fault %#x: %v %v", gpa, res, err)
					}
				}
				f.calls()
				f.ext.fail["remove"] = []error{fail}
				f.vm.MMULock().Lock(f.th)
				zapped := f.m.UnmapGFNRange(f.th, gmem.Range{Slot: f.vm.SlotAt(0x10), Start: 0x10, End: 0x12, Filter: gmem.FilterPrivate})
				f.vm.MMULock().Unlock(f.th)
				want := []string{"remove 0x10@4K [non-present]", "remove 0x11@4K [non-present]"}
				if got := f.calls(); !zapped || !slices.Equal(got, want) {
					t.Errorf("zap (flush %v) hooks:\n got  %q\n want %q", zapped, got, want)
				}
				st := f.m.Stats()
				if st.Mapped[MirrorRoot][addr.Level4K] != 1 || st.Zapped != 2 || st.PageTables[MirrorRoot] != 4 {
					t.Errorf("after the zap: %d leaves, %d zapped, %d tables; want 1, 2, 4",
						st.Mapped[MirrorRoot][addr.Level4K], st.Zapped, st.PageTables[MirrorRoot])
				}
			})
		})
	}
}

// Teardown removes the tree depth-first: the root's entry is written
// non-present first, so the tables below are already unlinked (seen from
// the root: "no table") when their leaves are removed from the S-EPT and
// each table's S-EPT page is reclaimed (free_external_spt, at the level of
// the entry that pointed at it) after everything below it. A failed
// reclaim leaks the page and is counted. The root has no S-EPT page of its
// own.
// Kernel: kvm_mmu_uninit_tdp_mmu() -> tdp_mmu_zap_root() ->
// handle_removed_pt().
func TestTeardownHookOrder(t *testing.T) {
	for _, tc := range []struct {
		fail   error
		leaked int64
	}{{nil, 0}, {errDead, 1}} {
		t.Run(fmt.Sprint(tc.fail), func(t *testing.T) {
			var st Stats
			withMirror(t, func(f *mirrorFixture) {
				for _, gpa := range []uint64{0x10000, 0x11000} {
					if res, err := f.fault(gpa, addr.Level4K); res != RetFixed || err != nil {
						t.Fatalf("fault %#x: %v %v", gpa, res, err)
					}
				}
				f.calls()
				f.ext.fail["free"] = []error{tc.fail}
				f.m.Destroy(f.th)
				want := []string{
					"remove 0x10@4K [no table]", "remove 0x11@4K [no table]",
					"free 0x0@2M [no table]", "free 0x0@1G [no table]", "free 0x0@" + addr.Level(3).String() + " [non-present]",
				}
				if got := f.calls(); !slices.Equal(got, want) {
					t.Errorf("teardown hooks:\n got  %q\n want %q", got, want)
				}
				st = f.m.Stats()
			})
			if st.LeakedExternal != tc.leaked || st.PageTables != [2]int64{} || st.Mapped != [2][3]int64{} {
				t.Errorf("after teardown: leaked %d (want %d), tables %v, mapped %v", st.LeakedExternal, tc.leaked, st.PageTables, st.Mapped)
			}
		})
	}
}

// A split demotes the huge mirror leaf in the S-EPT while the entry still
// holds the leaf, and only then replaces it with a table of 512 leaves
// one level down; a failing split_external_spte leaves the huge leaf
// alone and the error goes to the caller. An empty split cache fails
// before any hook. Kernel: tdp_mmu_split_huge_page() (TDX huge-page
// series), tdp_mmu_set_spte() -> split_external_spt().
func TestSplitHookOrder(t *testing.T) {
	const gpa, huge = 0x200000, addr.GFN(0x200)
	r := gmem.Range{Start: 0x210, End: 0x220, Filter: gmem.FilterPrivate}
	for _, tc := range []struct {
		name      string
		fail      error
		noTopUp   bool
		wantErr   error
		wantCalls []string
		want2M    string
	}{
		{"splits", nil, false, nil, []string{"split 0x200@2M [huge leaf 0x200]"}, "present"},
		{"split busy", errBusy, false, errno.EBUSY, []string{"split 0x200@2M [huge leaf 0x200]"}, "huge leaf"},
		{"split fails", errDead, false, errno.EIO, []string{"split 0x200@2M [huge leaf 0x200]"}, "huge leaf"},
		{"cache empty", nil, true, kvm.ErrSplitCacheLow, nil, "huge leaf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withMirror(t, func(f *mirrorFixture) {
				if res, err := f.fault(gpa, addr.Level2M); res != RetFixed || err != nil {
					t.Fatalf("fault: %v %v", res, err)
				}
				if got := f.calls(); got[len(got)-1] != "set 0x200@2M [FROZEN]" {
					t.Fatalf("the fault did not map a 2M leaf: %q", got)
				}
				leaf := mustLookup(t, f.m, huge)
				if !tc.noTopUp {
					if err := f.m.TopUpSplitCache(f.th); err != nil {
						t.Fatal(err)
					}
				}
				f.ext.fail["split"] = []error{tc.fail}
				r.Slot = f.vm.SlotAt(huge)
				f.vm.MMULock().Lock(f.th)
				err := f.m.SplitCrossBoundary(f.th, r)
				f.vm.MMULock().Unlock(f.th)
				if (tc.wantErr == nil) != (err == nil) || (err != nil && !errors.Is(err, tc.wantErr)) {
					t.Errorf("split: %v, want %v", err, tc.wantErr)
				}
				got := f.calls()
				for i := range got {
					got[i] = replacePFN(got[i], leaf.PFN)
				}
				if !slices.Equal(got, tc.wantCalls) {
					t.Errorf("split hooks:\n got  %q\n want %q", got, tc.wantCalls)
				}
				e := f.entry(huge, addr.Level2M)
				if e[:len(tc.want2M)] != tc.want2M {
					t.Errorf("2M mirror entry after the split: %s, want %s", e, tc.want2M)
				}
				st := f.m.Stats()
				wantSplits, want4K := int64(0), int64(0)
				if tc.want2M == "present" {
					wantSplits, want4K = 1, 512
				}
				if st.Splits[addr.Level2M] != wantSplits || st.Mapped[MirrorRoot][addr.Level4K] != want4K || st.Mapped[MirrorRoot][addr.Level2M] != 1-wantSplits {
					t.Errorf("after the split: %d splits, mapped %v", st.Splits[addr.Level2M], st.Mapped[MirrorRoot])
				}
			})
		})
	}
}

// replacePFN names the huge leaf's PFN by its GFN, so the expectations do
// not depend on which host page the leaf got.
func replacePFN(s string, pfn addr.PFN) string {
	old := fmt.Sprintf("huge leaf %s", pfn)
	if i := len(s) - len(old) - 1; i > 0 && s[i:len(s)-1] == old {
		return s[:i] + "huge leaf 0x200]"
	}
	return s
}

// The direct root has no external page table: a shared fault and its zap
// call no hook. Kernel: is_mirror_sptep() is false for the direct root.
func TestDirectRootCallsNoHook(t *testing.T) {
	withMirror(t, func(f *mirrorFixture) {
		if res, err := f.v.PageFault(f.th, 5<<20, false, addr.Level4K); res != RetFixed || err != nil {
			t.Fatalf("shared fault: %v %v", res, err)
		}
		f.vm.MMULock().Lock(f.th)
		zapped := f.m.UnmapGFNRange(f.th, gmem.Range{Slot: f.vm.SlotAt(0x500), Start: 0x500, End: 0x501, Filter: gmem.FilterShared})
		f.vm.MMULock().Unlock(f.th)
		if got := f.calls(); !zapped || len(got) != 0 {
			t.Errorf("shared fault and zap (flush %v) called hooks %q", zapped, got)
		}
	})
}
