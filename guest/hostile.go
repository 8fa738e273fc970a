package guest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// A hostile guest issues TDG.MEM.PAGE.ACCEPT and MapGPA with any operand
// (every level, out of range, unaligned, twice, on the shared alias, on
// ranges other vCPUs are converting) and touches memory while its vCPUs
// race each other. The host owes it the real status for each, and must
// keep every invariant; only a host-side failure is an error.
//
// The guest still keeps its own books (what it accepted, wrote and
// converted), so that what it reads is checked: each vCPU converts and
// touches only its own share of memory (64 KiB chunks dealt round robin,
// so the vCPUs share every 2 MiB range), while accepts go anywhere.

// HostileStats counts the operations a hostile guest tried, by what the
// host answered.
type HostileStats map[string]int64

// chunk is the unit of memory dealt to the vCPUs.
const hostileChunk = 64 << 10

// Hostile runs n random operations on vCPU v (index i of nv vCPUs) from
// rng and adds what the host answered to stats. It returns an error only
// for a host-side failure; a memory-fault exit to userspace (the guest
// touched or accepted memory it had converted), or a VM the guest itself
// got killed (kvm_vm_dead, not a bug), ends nothing but the operation.
func (g *Guest) Hostile(t *sched.Thread, v *tdx.VCPU, i, nv, n int, rng *rand.Rand, stats func(op, outcome string)) error {
	g.hostile.Store(true)
	for range n {
		op, outcome, err := g.hostileOp(t, v, i, nv, rng)
		var mf *kvm.MemoryFault
		switch {
		case err == nil:
		case errors.As(err, &mf):
			outcome = "exit to userspace: memory fault " + mf.Errno.String()
		case errors.Is(err, errno.EIO) && g.td.VM().Dead():
			if b, _ := g.td.VM().Bugged(); !b {
				stats(op, "VM dead")
				return nil // the guest got its own VM killed
			}
			return fmt.Errorf("hostile %s: %w", op, err)
		default:
			return fmt.Errorf("hostile %s: %w", op, err)
		}
		stats(op, outcome)
	}
	// Like a guest done with a driver's buffers, convert what this vCPU
	// made shared back to private (and accept it), so that the workloads
	// after this one find the guest's memory as a guest leaves it.
	for _, r := range g.ram {
		for lo := r.GPA; lo < r.End(); lo += hostileChunk {
			if !mine(lo, i, nv) {
				continue
			}
			for p := lo; p < lo+hostileChunk; {
				if !g.shared.get(p>>addr.PageShift) || g.off.get(p>>addr.PageShift) {
					p += addr.PageSize
					continue
				}
				end := p
				for end < lo+hostileChunk && g.shared.get(end>>addr.PageShift) && !g.off.get(end>>addr.PageShift) {
					end += addr.PageSize
				}
				if err := g.ConvertToPrivate(t, v, p, end-p); err != nil {
					var mf *kvm.MemoryFault
					if errors.As(err, &mf) || errors.Is(err, errno.EIO) && g.td.VM().Dead() {
						return nil
					}
					return fmt.Errorf("hostile: converting [%#x, %#x) back: %w", p, end, err)
				}
				stats("convert back", outcomeOK)
				p = end
			}
		}
	}
	return nil
}

// Outcomes that are not the host refusing anything: the operation worked,
// or the guest did not issue it.
const (
	outcomeOK       = "ok"
	skippedPrefix   = "skipped"
	notIssuedPrefix = "not issued"
)

// HostileRefused reports whether a hostile operation, as the report keys
// it ("accept: TDX_OPERAND_INVALID(RCX)"), was refused by the host: a bad
// operand, a range it would not convert, an exit to userspace.
func HostileRefused(key string) bool {
	_, outcome, _ := strings.Cut(key, ": ")
	switch {
	case outcome == tdxmodule.Success.String(), outcome == tdx.TDVMCallStatusName(tdx.TDVMCallSuccess), outcome == outcomeOK,
		strings.HasPrefix(outcome, skippedPrefix), strings.HasPrefix(outcome, notIssuedPrefix):
		return false
	}
	return true
}

// mine reports whether the page at gpa is in vCPU i's share.
func mine(gpa uint64, i, nv int) bool { return int(gpa/hostileChunk)%nv == i }

// hostileGPA picks a page of RAM, or with some chance an address that is
// unaligned, past RAM, in no memslot, or enormous.
func (g *Guest) hostileGPA(rng *rand.Rand, align uint64) uint64 {
	ram := g.ram[rng.IntN(len(g.ram))]
	switch rng.IntN(10) {
	case 0:
		return ram.GPA + rng.Uint64N(ram.Size) // unaligned
	case 1:
		return g.ram[len(g.ram)-1].End() + rng.Uint64N(4)*addr.Size2M // past RAM
	case 2:
		return g.sharedBit>>1 + rng.Uint64N(1<<20)*addr.PageSize // far out, below the shared bit
	}
	if ram.Size < align {
		return ram.GPA
	}
	return ram.GPA + rng.Uint64N(ram.Size/align)*align
}

func (g *Guest) hostileOp(t *sched.Thread, v *tdx.VCPU, i, nv int, rng *rand.Rand) (op, outcome string, err error) {
	switch k := rng.IntN(10); {
	case k < 4:
		level := addr.Level(rng.IntN(5)) // 3 and 4 are not levels the module accepts
		if rng.IntN(3) > 0 {
			level = addr.Level(rng.IntN(2))
		}
		align := uint64(addr.PageSize)
		if level <= addr.Level1G {
			align = level.Bytes()
		}
		gpa := g.hostileGPA(rng, align)
		if rng.IntN(8) == 0 {
			gpa |= g.sharedBit // the shared alias
		}
		err := g.hostileAccept(t, v, gpa, level, &outcome)
		return "accept", outcome, err
	case k < 7:
		size := []uint64{addr.PageSize, 16 << 10, hostileChunk, addr.Size2M, 4097, 0, 3 << 20, 1 << 30}[rng.IntN(8)]
		gpa := g.hostileGPA(rng, addr.PageSize)
		toShared := rng.IntN(2) == 0
		err := g.hostileMapGPA(t, v, i, nv, gpa, size, toShared, &outcome)
		return "mapgpa", outcome, err
	default:
		ram := g.ram[rng.IntN(len(g.ram))]
		gpa := ram.GPA + rng.Uint64N(ram.Size/addr.PageSize)*addr.PageSize
		if !mine(gpa, i, nv) || !g.Usable(gpa) {
			return "touch", skippedPrefix + " (another vCPU's memory)", nil
		}
		if err := g.Touch(t, v, gpa, rng.IntN(2) == 0); err != nil {
			return "touch", "", err
		}
		return "touch", outcomeOK, nil
	}
}

// hostileAccept is one TDG.MEM.PAGE.ACCEPT, anywhere: success is booked
// (the pages now read zero; a success can only be on pages not accepted
// before, so nothing the guest wrote is forgotten wrongly).
func (g *Guest) hostileAccept(t *sched.Thread, v *tdx.VCPU, gpa uint64, level addr.Level, outcome *string) error {
	st, err := v.Accept(t, addr.GPA(gpa), level)
	if err != nil {
		return err
	}
	*outcome = st.String()
	if st != 0 || level > addr.Level1G || gpa&g.sharedBit != 0 {
		return nil
	}
	size := level.Bytes()
	for p := gpa; p < gpa+size; p += addr.PageSize {
		if !g.InRAM(p, addr.PageSize) {
			g.fail("accept of %#x at %s succeeded outside the guest's RAM", gpa, level)
			return nil
		}
	}
	g.markAccepted(gpa, size)
	return nil
}

// hostileMapGPA is one TDG.VP.VMCALL<MapGPA>, not retried. The part the
// host converted ([gpa, r11) on RETRY or an error, all of it on success)
// is booked if it is the vCPU's own memory; a conversion the guest asks
// for over another vCPU's memory is refused by the guest itself (not
// issued), as a real guest only converts memory it owns.
func (g *Guest) hostileMapGPA(t *sched.Thread, v *tdx.VCPU, i, nv int, gpa, size uint64, toShared bool, outcome *string) error {
	for p := gpa &^ (addr.PageSize - 1); p < gpa+size && p < gpa+(2<<30); p += addr.PageSize {
		switch {
		case !g.InRAM(p, addr.PageSize):
		case !mine(p, i, nv):
			*outcome = notIssuedPrefix + " (another vCPU's memory)"
			return nil
		case !toShared && !g.shared.get(p>>addr.PageShift):
			// Converting private memory to private would keep the
			// guest's books right only if the host did nothing; a
			// guest asks it only for memory it converted to shared.
			*outcome = notIssuedPrefix + " (private already)"
			return nil
		}
	}
	req := gpa
	if toShared {
		req |= g.sharedBit
	}
	st, r11, err := v.MapGPA(t, req, size)
	if err != nil {
		return err
	}
	*outcome = tdx.TDVMCallStatusName(st)
	done := r11 &^ g.sharedBit
	if st == tdx.TDVMCallSuccess {
		done = gpa + size
	}
	if done <= gpa || gpa%addr.PageSize != 0 {
		return nil
	}
	first, np := gpa>>addr.PageShift, (done-gpa)>>addr.PageShift
	if !g.InRAM(gpa, done-gpa) {
		g.fail("MapGPA(%#x, %#x) converted [%#x, %#x), outside the guest's RAM", gpa, size, gpa, done)
		return nil
	}
	if toShared {
		g.shared.setRange(first, np)
		g.accepted.clearRange(first, np)
		g.written.clearRange(first, np)
		return nil
	}
	for p := first; p < first+np; p++ {
		if g.shared.get(p) {
			g.shared.clearRange(p, 1) // private again, not accepted yet
		}
	}
	return nil
}
