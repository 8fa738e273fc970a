package tdxmodule_test

import (
	"github.com/tdxsim/tdxsim/hostmem"
	"testing"

	"pgregory.net/rapid"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/tdxcall"
	. "github.com/tdxsim/tdxsim/tdxmodule"
)

// ref is a reference model of 8 consecutive 4K entries of one S-EPT page of
// a RUNNABLE TD, of the TD's epoch counters and of one vCPU: enough to
// predict the exact status of AUG, BLOCK, UNBLOCK, TRACK, REMOVE and
// ACCEPT, and the PAMT type of each page.
type ref struct {
	state    [8]uint8
	bepoch   [8]uint64
	page     [8]addr.PFN
	epoch    uint64
	inside   bool
	vepoch   uint64
	refcount [2]int
}

func (r *ref) tracked(i int) bool {
	b := r.bepoch[i]
	return b+1 < r.epoch || b+1 == r.epoch && r.refcount[b&1] == 0
}

const propBase = addr.GPA(0x200000)

func TestSEPTProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		f := newFx(rt, Config{DynamicPAMT: rapid.Bool().Draw(rt, "dpamt")}).runnable()
		f.septTo(propBase, 0)
		r := &ref{epoch: 1}
		for i := range r.state {
			r.state[i] = SeptFree
		}
		vc := f.m.VCPU(f.vcpu)
		n := rapid.IntRange(1, 120).Draw(rt, "ops")
		for step := 0; step < n; step++ {
			i := rapid.IntRange(0, 7).Draw(rt, "i")
			gpa := propBase + addr.GPA(i)*addr.PageSize
			op := rapid.SampledFrom([]string{"aug", "block", "unblock", "track", "remove", "accept", "enter", "exit"}).Draw(rt, "op")
			var got, exp Status
			s := r.state[i]
			switch op {
			case "aug":
				p := f.page()
				got = first(tdxcall.MemPageAug(f.m, nil, f.tdr, gpa, 0, p))
				exp = EPTEntryStateIncorrect.With(OpRCX)
				if s == SeptFree {
					exp, r.state[i], r.page[i] = Success, SeptPending, p
				}
			case "block":
				got = first(tdxcall.MemRangeBlock(f.m, nil, f.tdr, gpa, 0))
				switch {
				case s == SeptMapped || s == SeptPending:
					exp, r.state[i], r.bepoch[i] = Success, BlockedOf(s), r.epoch
				case IsBlocked(s):
					exp = GPARangeAlreadyBlocked.With(OpRCX)
				default:
					exp = EPTEntryStateIncorrect.With(OpRCX)
				}
			case "unblock":
				got = first(tdxcall.MemRangeUnblock(f.m, nil, f.tdr, gpa, 0))
				switch {
				case !IsBlocked(s):
					exp = EPTEntryStateIncorrect.With(OpRCX)
				case !r.tracked(i):
					exp = TLBTrackingNotDone.With(OpSEPTTree)
				default:
					exp, r.state[i] = Success, UnblockedOf(s)
				}
			case "track":
				got = first(tdxcall.MemTrack(f.m, nil, f.tdr))
				if r.refcount[1-(r.epoch&1)] != 0 {
					exp = PreviousTLBEpochBusy
				} else {
					exp = Success
					r.epoch++
				}
			case "remove":
				got = first(tdxcall.MemPageRemove(f.m, nil, f.tdr, gpa, 0))
				switch {
				case !IsLeafState(s):
					exp = EPTEntryStateIncorrect.With(OpRCX)
				case !IsBlocked(s):
					exp = GPARangeNotBlocked.With(OpRCX)
				case !r.tracked(i):
					exp = TLBTrackingNotDone.With(OpRCX)
				default:
					exp, r.state[i] = Success, SeptFree
				}
			case "accept":
				if !r.inside {
					continue
				}
				x := f.m.Accept(nil, vc, uint64(gpa))
				got = x.Status
				switch s {
				case SeptPending:
					exp, r.state[i] = Success, SeptMapped
				case SeptMapped:
					exp = PageAlreadyAccepted
				default:
					if x.Kind != ExitEPTViolation {
						rt.Fatalf("step %d: accept of %s gave %v, want an EPT violation", step, SeptStateName(s), x.Kind)
					}
					exp = got
				}
			case "enter":
				got = first(tdxcall.VPEnter(f.m, nil, f.vcpu))
				exp = VCPUStateIncorrect
				if !r.inside {
					exp, r.inside, r.vepoch = Success, true, r.epoch
					r.refcount[r.epoch&1]++
				}
			case "exit":
				f.m.TDExit(vc)
				if r.inside {
					r.inside = false
					r.refcount[r.vepoch&1]--
				}
				continue
			}
			if got != exp {
				rt.Fatalf("step %d: %s on entry %d (%s): got %v, want %v", step, op, i, SeptStateName(s), got, exp)
			}
			// The module's view agrees with the reference, and PAMT with both.
			for k := range r.state {
				g := propBase + addr.GPA(k)*addr.PageSize
				if lvl, st := f.state(g); lvl != 0 || st != r.state[k] {
					rt.Fatalf("step %d: entry %d is %s, reference %s", step, k, SeptStateName(st), SeptStateName(r.state[k]))
				}
				if r.page[k] == 0 {
					continue
				}
				_, out := tdxcall.PhymemPageRdmd(f.m, nil, r.page[k])
				wantPT := uint64(PTREG)
				if r.state[k] == SeptFree {
					wantPT = uint64(PTNDA)
				}
				if out.RCX != wantPT {
					rt.Fatalf("step %d: page of entry %d has %s, want %s", step, k, PTName(uint8(out.RCX)), PTName(uint8(wantPT)))
				}
			}
		}
	})
}

// FuzzSEAMCALL drives random register-level SEAMCALLs (and guest accepts)
// at a TD in every build stage: no panic, and no hostmem violation — the
// module never lets a page it assigns go back to the host.
func FuzzSEAMCALL(f *testing.F) {
	f.Add([]byte{6, 0, 0, 1, 2, 3, 29, 0, 7, 0, 38, 9})
	f.Add([]byte{15, 1, 23, 1, 2, 0, 30, 1, 41, 0, 28, 4, 58, 3, 59, 3})
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 400 {
			prog = prog[:400]
		}
		fx := newFx(t, Config{DynamicPAMT: len(prog)%2 == 0}).runnable()
		fx.aug(0x200000, 0)
		vc := fx.m.VCPU(fx.vcpu)
		var pages []addr.PFN
		for i := 0; i < 4; i++ {
			pages = append(pages, fx.page())
		}
		big := fx.huge()
		operand := func(b byte) uint64 {
			switch b % 8 {
			case 0:
				return uint64(fx.tdr.HPA())
			case 1:
				return uint64(pages[int(b/8)%len(pages)].HPA())
			case 2:
				return uint64(big.HPA())
			case 3:
				return uint64(propBase) + uint64(b/8)*0x1000
			case 4:
				return uint64(propBase) | 1
			case 5:
				return uint64(b) << 40
			case 6:
				return uint64(fx.vcpu.HPA())
			}
			return uint64(b)
		}
		for i := 0; i+2 < len(prog); i += 3 {
			leaf := Leaf(prog[i] % 64)
			if prog[i] >= 200 {
				fx.m.TDExit(vc)
				first(tdxcall.VPEnter(fx.m, nil, fx.vcpu))
				fx.m.Accept(nil, vc, operand(prog[i+1]))
				continue
			}
			in := Regs{RAX: uint64(leaf), RCX: operand(prog[i+1]), RDX: operand(prog[i+2])}
			if leaf == LeafMemPageAug || leaf == LeafMemSEPTAdd || leaf == LeafMemPageAdd || leaf == LeafMemPageDemote {
				in.RCX, in.RDX, in.R8 = operand(prog[i+1]), uint64(fx.tdr.HPA()), operand(prog[i+2])
			}
			fx.m.SEAMCALL(nil, in)
		}
		// Whatever happened, freeing every page the test owns must be refused
		// for pages the module still assigns, and never corrupt the host.
		for _, p := range append(pages, big) {
			fx.mem.Free(nil, p, 1)
		}
		for _, v := range fx.c.Violations() {
			if v.Name != hostmem.RuleFreeTDXOwned {
				t.Fatalf("violation %s: %s", v.Name, v.Detail)
			}
		}
	})
}
