// Package guest is the TD's side of a run: vCPUs that touch guest physical
// memory, accept it (eagerly at boot or lazily on first touch, at 4K, 2M or
// 1G), convert ranges between private and shared with MapGPA, write content
// tags and check that what they read back is what they wrote, or zero after
// an accept.
//
// It is what a Linux TD guest does (arch/x86/coco/tdx/tdx.c and
// mm/unaccepted_memory.c), reduced to the memory operations the host can
// see. The guest keeps its own view of its memory in three bitmaps (one bit
// per 4 KiB page, atomic words, no per-page object): accepted, written with
// this page's private tag, and converted to shared.
package guest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// Range is guest RAM: [GPA, GPA+Size), 2 MiB aligned (the memslots).
type Range struct{ GPA, Size uint64 }

// End returns the first GPA past r.
func (r Range) End() uint64 { return r.GPA + r.Size }

// Config describes the guest.
type Config struct {
	// RAM is the guest's memory map (private GPAs, without the shared bit).
	RAM []Range
	// MaxAcceptLevel is the largest TDG.MEM.PAGE.ACCEPT the guest tries
	// where the range allows it; on TDX_PAGE_SIZE_MISMATCH it falls back
	// to the next smaller level, as tdx_accept_memory()'s try_accept_one()
	// does. Linux tries 1G first; Level4K (the zero value) is a guest that
	// accepts 4 KiB only, as early firmware does.
	MaxAcceptLevel addr.Level
	// Reserved ranges were accepted before the guest ran (the measured
	// image, added with TDH.MEM.PAGE.ADD): the guest never accepts,
	// touches or converts them (firmware and kernel image live there).
	Reserved []Range
}

// Stats counts what the guest did.
type Stats struct {
	Accepts       [3]int64 // successful TDG.MEM.PAGE.ACCEPT by level
	SizeMismatch  int64    // accepts that failed at a level and fell back to a smaller one
	LazyAccepts   int64    // 2 MiB units accepted on first touch
	Touches       int64    // private pages read (and written) by workloads
	SharedTouches int64    // shared pages written and read through the alias
	ToShared      int64    // MapGPA calls to shared
	ToPrivate     int64    // MapGPA calls to private
	BytesShared   uint64
	BytesPrivate  uint64
	MapGPARetries int64
}

// Guest is one TD's guest.
type Guest struct {
	td        *tdx.TD
	vcpus     []*tdx.VCPU
	ram       []Range
	sharedBit uint64
	owner     uint16
	maxLevel  addr.Level

	accepted, written, shared bitmap
	// off marks pages the guest does not use: reserved, or lost with a
	// deleted memslot.
	off bitmap
	// accepting marks 2 MiB units a vCPU is lazily accepting (Linux's
	// accepting_list in accept_memory()): another vCPU touching the unit
	// waits instead of accepting it twice.
	accepting bitmap
	// storing is, per vCPU (by index in vcpus), the GPA+1 of the private
	// page whose store and booking it is between (0: none): on the
	// parallel scheduler another vCPU's load can see the store before
	// the book says the page was written (see readMatches).
	storing []atomic.Uint64

	c struct {
		accepts                            [3]atomic.Int64
		mismatch, lazy, touches, shTouches atomic.Int64
		toShared, toPrivate, retries       atomic.Int64
		bytesShared, bytesPrivate          atomic.Uint64
	}
	mu       sync.Mutex
	problems []string
	// hostile is set once a hostile operation ran (Hostile): the books
	// can then be ahead of a vCPU's view (another vCPU accepted its
	// page), so an accept finding the page accepted is not a finding.
	hostile atomic.Bool
	// sharedZero: the host converts to shared with content mode ZERO
	// (ExpectSharedZero), so a shared page must read zero before the
	// guest writes it, not merely zero or the guest's own earlier tag.
	sharedZero atomic.Bool
}

// ExpectSharedZero tells the guest's checks that the host's private-to-
// shared conversions now zero the memory (KVM_SET_MEMORY_ATTRIBUTES2_ZERO).
func (g *Guest) ExpectSharedZero(on bool) { g.sharedZero.Store(on) }

// New returns the guest of td, whose vCPUs are vcpus.
func New(td *tdx.TD, vcpus []*tdx.VCPU, cfg Config) (*Guest, error) {
	if len(cfg.RAM) == 0 {
		return nil, errors.New("guest: no RAM")
	}
	var top uint64
	for _, r := range cfg.RAM {
		if r.GPA%addr.Size2M != 0 || r.Size%addr.Size2M != 0 || r.Size == 0 {
			return nil, fmt.Errorf("guest: RAM [%#x, %#x) is not 2 MiB aligned", r.GPA, r.End())
		}
		top = max(top, r.End())
	}
	lvl := cfg.MaxAcceptLevel
	if lvl > addr.Level1G {
		return nil, fmt.Errorf("guest: accept level %s: want 4K, 2M or 1G", lvl)
	}
	pages := top >> addr.PageShift
	g := &Guest{td: td, vcpus: vcpus, ram: append([]Range(nil), cfg.RAM...),
		sharedBit: uint64(td.VM().SharedBit().GPA()), owner: uint16(td.HKID()), maxLevel: lvl,
		accepted: newBitmap(pages), written: newBitmap(pages), shared: newBitmap(pages), off: newBitmap(pages),
		accepting: newBitmap(pages / 512), storing: make([]atomic.Uint64, len(vcpus))}
	for _, r := range cfg.Reserved {
		if r.GPA%addr.PageSize != 0 || r.Size%addr.PageSize != 0 || r.End() > top {
			return nil, fmt.Errorf("guest: reserved [%#x, %#x) is not 4 KiB aligned inside RAM", r.GPA, r.End())
		}
		g.accepted.setRange(r.GPA>>addr.PageShift, r.Size>>addr.PageShift)
		g.off.setRange(r.GPA>>addr.PageShift, r.Size>>addr.PageShift)
	}
	return g, nil
}

// SetMaxAcceptLevel changes the largest accept the guest tries (the boot
// step's choice); call it while no vCPU runs.
func (g *Guest) SetMaxAcceptLevel(l addr.Level) {
	if l <= addr.Level1G {
		g.maxLevel = l
	}
}

// VCPUs returns the guest's vCPUs.
func (g *Guest) VCPUs() []*tdx.VCPU { return g.vcpus }

// RAM returns the guest's memory map.
func (g *Guest) RAM() []Range { return g.ram }

// RAMBytes returns the size of the guest's memory.
func (g *Guest) RAMBytes() uint64 {
	var n uint64
	for _, r := range g.ram {
		n += r.Size
	}
	return n
}

// InRAM reports whether [gpa, gpa+size) lies inside one RAM range.
func (g *Guest) InRAM(gpa, size uint64) bool {
	for _, r := range g.ram {
		if gpa >= r.GPA && gpa+size <= r.End() && gpa+size > gpa {
			return true
		}
	}
	return false
}

// Stats returns the counters.
func (g *Guest) Stats() Stats {
	var s Stats
	for i := range s.Accepts {
		s.Accepts[i] = g.c.accepts[i].Load()
	}
	s.SizeMismatch, s.LazyAccepts, s.Touches = g.c.mismatch.Load(), g.c.lazy.Load(), g.c.touches.Load()
	s.SharedTouches, s.ToShared, s.ToPrivate = g.c.shTouches.Load(), g.c.toShared.Load(), g.c.toPrivate.Load()
	s.BytesShared, s.BytesPrivate, s.MapGPARetries = g.c.bytesShared.Load(), g.c.bytesPrivate.Load(), g.c.retries.Load()
	return s
}

// Problems returns what the guest saw that it should not have: content
// that is neither what it wrote nor zero, a page already accepted that it
// had not accepted.
func (g *Guest) Problems() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.problems...)
}

func (g *Guest) fail(format string, args ...any) {
	g.mu.Lock()
	g.problems = append(g.problems, fmt.Sprintf(format, args...))
	g.mu.Unlock()
}

// Usable reports whether the guest uses the page at gpa as memory: in
// RAM, not reserved, not lost with a deleted memslot.
func (g *Guest) Usable(gpa uint64) bool {
	return g.InRAM(gpa&^(addr.PageSize-1), addr.PageSize) && !g.off.get(gpa>>addr.PageShift)
}

// Forget drops [lo, lo+n) from the memory the guest uses, as when the
// host deleted its memslot (the guest would fault on it forever).
func (g *Guest) Forget(lo, n uint64) {
	first, np := lo>>addr.PageShift, n>>addr.PageShift
	g.off.setRange(first, np)
	g.accepted.clearRange(first, np)
	g.written.clearRange(first, np)
}

// Accepted reports whether the guest has accepted the private page at gpa.
func (g *Guest) Accepted(gpa uint64) bool { return g.accepted.get(gpa >> addr.PageShift) }

// Shared reports whether the guest converted the page at gpa to shared.
func (g *Guest) Shared(gpa uint64) bool { return g.shared.get(gpa >> addr.PageShift) }

// PrivateTag is the content tag the guest writes to the private page at
// gpa, and SharedTag the one it writes through the shared alias: a
// function of the TD and the GFN, so checking needs no per-page memory.
func (g *Guest) PrivateTag(gpa uint64) hostmem.Tag {
	return hostmem.MakeTag(g.owner, gpa>>addr.PageShift<<1)
}

// SharedTag is the tag written to gpa's shared alias.
func (g *Guest) SharedTag(gpa uint64) hostmem.Tag {
	return hostmem.MakeTag(g.owner, gpa>>addr.PageShift<<1|1)
}

// busyRetries bounds the guest's retries of a TDCALL that returned
// TDX_OPERAND_BUSY (another vCPU or the host holds the S-EPT entry).
const busyRetries = 1000

// accept runs TDG.MEM.PAGE.ACCEPT until it is not BUSY.
func (g *Guest) accept(t *sched.Thread, v *tdx.VCPU, gpa uint64, level addr.Level) (tdxmodule.Status, error) {
	for tries := 0; ; tries++ {
		st, err := v.Accept(t, addr.GPA(gpa), level)
		if err != nil {
			return 0, fmt.Errorf("vCPU %d accept %#x at %s: %w", v.ID(), gpa, level, err)
		}
		if st.HasCode(tdxmodule.OperandBusy) && tries < busyRetries {
			t.Spin()
			continue
		}
		return st, nil
	}
}

// AcceptRange accepts [lo, lo+n) as tdx_accept_memory() does: at each
// GPA, the largest level (up to the guest's maximum) that is aligned, fits
// and holds no page the guest accepted already (those it skips), falling back to the next smaller level on TDX_PAGE_SIZE_MISMATCH
// (the host mapped it smaller). Any other failure is an error (Linux
// panics: "TDX: Failed to accept memory").
func (g *Guest) AcceptRange(t *sched.Thread, v *tdx.VCPU, lo, n uint64) error {
	return g.AcceptRangeUpTo(t, v, lo, n, g.maxLevel)
}

// AcceptRangeUpTo is AcceptRange with maxLevel, not the guest's maximum,
// as the largest level tried: firmware accepting part of its memory at
// 4K (EDK2's TdAcceptPages with SIZE_4KB), whatever the kernel will use.
func (g *Guest) AcceptRangeUpTo(t *sched.Thread, v *tdx.VCPU, lo, n uint64, maxLevel addr.Level) error {
	if lo%addr.PageSize != 0 || n%addr.PageSize != 0 {
		return fmt.Errorf("guest: accept [%#x, %#x): not 4 KiB aligned", lo, lo+n)
	}
	for gpa, end := lo, lo+n; gpa < end; {
		if g.accepted.get(gpa >> addr.PageShift) {
			gpa += addr.PageSize // accepted before (firmware, the image)
			continue
		}
		level := min(maxLevel, addr.Level1G)
		for ; level > addr.Level4K; level-- {
			if sz := level.Bytes(); gpa%sz == 0 && gpa+sz <= end && g.accepted.none(gpa>>addr.PageShift, level.Pages()) {
				break
			}
		}
		for {
			st, err := g.accept(t, v, gpa, level)
			if err != nil {
				return err
			}
			if st == tdxmodule.Success {
				g.c.accepts[level].Add(1)
				g.markAccepted(gpa, level.Bytes())
				gpa += level.Bytes()
				break
			}
			if st.HasCode(tdxmodule.PageAlreadyAccepted) {
				if !g.hostile.Load() { // a hostile vCPU may have accepted it behind the books
					g.fail("vCPU %d: accept %#x at %s: %v, but the guest never accepted it", v.ID(), gpa, level, st)
				}
				// Booked as accepted, but not as zeroed: this accept
				// cleared nothing, and what was written there since the
				// accept that did still reads back.
				g.accepted.setRange(gpa>>addr.PageShift, level.Pages())
				gpa += level.Bytes()
				break
			}
			if level > addr.Level4K {
				// try_accept_one() returns 0 on any failure and the
				// caller tries the next smaller size: the host mapped it
				// smaller (PAGE_SIZE_MISMATCH), or the module does not
				// accept this level (1G on TDX 1.5: OPERAND_INVALID).
				g.c.mismatch.Add(1)
				level--
				continue
			}
			return fmt.Errorf("vCPU %d accept %#x at %s: %v", v.ID(), gpa, level, st)
		}
	}
	return nil
}

func (g *Guest) markAccepted(gpa, size uint64) {
	first, n := gpa>>addr.PageShift, size>>addr.PageShift
	g.accepted.setRange(first, n)
	g.written.clearRange(first, n) // accept zeroes the page
}

// Touch is a load (and a store when write) by vCPU v to the private page
// at gpa. A page the guest has not accepted is accepted first, with the
// rest of its 2 MiB unit, as Linux's lazy accept does (accept_memory() on
// allocation, unit_size 2 MiB). The load must read the page's tag if the
// guest wrote it, else zero. Touching a page the guest converted to shared
// is a no-op (the guest does not use it as private memory).
func (g *Guest) Touch(t *sched.Thread, v *tdx.VCPU, gpa uint64, write bool) error {
	gpa &^= addr.PageSize - 1
	pg := gpa >> addr.PageShift
	if g.shared.get(pg) || g.off.get(pg) {
		return nil
	}
	if !g.accepted.get(pg) {
		if err := g.lazyAccept(t, v, gpa); err != nil {
			return err
		}
	}
	g.c.touches.Add(1)
	before := g.written.get(pg)
	got, err := v.Read(t, addr.GPA(gpa))
	if err != nil {
		if errors.Is(err, tdx.ErrVE) {
			// Linux panics on a #VE for memory it accepted: the host
			// took the accepted page away (the lost memory zap_private_on_notifier=true shows).
			g.fail("vCPU %d: #VE on private gpa %#x, which the guest accepted: accepted memory was lost", v.ID(), gpa)
		}
		return err
	}
	if want, ok := g.readMatches(gpa, before, got); !ok {
		g.fail("vCPU %d: private gpa %#x reads tag %#x, want %#x (%s)", v.ID(), gpa, uint64(got), uint64(want), whatWant(want))
	}
	if !write {
		return nil
	}
	tag := g.PrivateTag(gpa)
	slot := g.storingSlot(v)
	if slot != nil {
		slot.Store(gpa + 1)
	}
	err = v.Write(t, addr.GPA(gpa), tag)
	if err == nil {
		g.written.set(pg)
	}
	if slot != nil {
		slot.Store(0)
	}
	if err != nil {
		return err
	}
	if got, err := v.Read(t, addr.GPA(gpa)); err != nil {
		return err
	} else if got != tag {
		g.fail("vCPU %d: private gpa %#x reads tag %#x right after writing %#x", v.ID(), gpa, uint64(got), uint64(tag))
	}
	return nil
}

// readMatches says whether got, what a load of the private page at gpa
// read, is what the page held at some moment of the load: zero or the
// guest's tag as the book said before the load (before) or says after
// it, or the tag another vCPU is storing now, which the book does not
// show yet. On the deterministic scheduler nothing runs between a store
// and its booking, so this is the book's one answer; on the parallel one
// two vCPUs touching one page race, as their real stores would. want is
// the book's answer now.
func (g *Guest) readMatches(gpa uint64, before bool, got hostmem.Tag) (want hostmem.Tag, ok bool) {
	tag := g.PrivateTag(gpa)
	expect := func(written bool) hostmem.Tag {
		if written {
			return tag
		}
		return 0
	}
	pg := gpa >> addr.PageShift
	want = expect(g.written.get(pg))
	if got == want || got == expect(before) {
		return want, true
	}
	if got != tag {
		return want, false
	}
	for i := range g.storing {
		if g.storing[i].Load() == gpa+1 {
			return want, true
		}
	}
	// the store's booking may have landed after the first look
	return want, g.written.get(pg)
}

// storingSlot is v's entry in storing (nil for a vCPU not in vcpus).
func (g *Guest) storingSlot(v *tdx.VCPU) *atomic.Uint64 {
	for i, w := range g.vcpus {
		if w == v {
			return &g.storing[i]
		}
	}
	return nil
}

func whatWant(t hostmem.Tag) string {
	if t == 0 {
		return "zero after accept"
	}
	return "what the guest wrote"
}

// lazyAccept accepts the 2 MiB unit holding gpa: whole when no page of it
// is accepted or shared, else its unaccepted private pages one by one.
func (g *Guest) lazyAccept(t *sched.Thread, v *tdx.VCPU, gpa uint64) error {
	unit := gpa &^ (addr.Size2M - 1)
	first := unit >> addr.PageShift
	u := unit / addr.Size2M
	for !g.accepting.claim(u) {
		// Another vCPU is accepting this unit: wait for it, halted (a
		// vCPU blocked in guest mode would stall TLB-tracking kicks),
		// then look again, as accept_memory() does ("goto retry"): the
		// other vCPU may have stopped before this page.
		v.Halt()
		t.WaitUntil("another vCPU accepting the unit", func() bool { return !g.accepting.get(u) })
		if g.accepted.get(gpa >> addr.PageShift) {
			return nil
		}
	}
	defer g.accepting.clear(u)
	if g.accepted.get(gpa >> addr.PageShift) {
		return nil // accepted while this vCPU waited
	}
	g.c.lazy.Add(1)
	if g.accepted.none(first, 512) && g.shared.none(first, 512) && g.off.none(first, 512) && g.InRAM(unit, addr.Size2M) {
		return g.AcceptRange(t, v, unit, addr.Size2M)
	}
	for p := uint64(0); p < 512; p++ {
		if g.accepted.get(first+p) || g.shared.get(first+p) || g.off.get(first+p) || !g.InRAM(unit+p<<addr.PageShift, addr.PageSize) {
			continue
		}
		if err := g.AcceptRange(t, v, unit+p<<addr.PageShift, addr.PageSize); err != nil {
			return err
		}
	}
	return nil
}

// MapGPA is TDG.VP.VMCALL<MapGPA>, retried from where the host stopped
// while it answers TDVMCALL_RETRY, as tdx_map_gpa() in the guest does: at
// most MapGPARetries times in a row without progress (max_retries_per_page),
// and a resume address outside the range is the host's error.
func (g *Guest) MapGPA(t *sched.Thread, v *tdx.VCPU, gpa, size uint64) error {
	for stuck := 0; ; {
		st, r11, err := v.MapGPA(t, gpa, size)
		if err != nil {
			return err
		}
		switch {
		case st == tdx.TDVMCallSuccess:
			return nil
		case st == tdx.TDVMCallRetry && r11 >= gpa && r11 < gpa+size:
			g.c.retries.Add(1)
			if r11 == gpa {
				if stuck++; stuck < MapGPARetries {
					continue
				}
				return &MapGPAError{GPA: gpa, Size: size, Status: st, At: r11}
			}
			size -= r11 - gpa
			gpa, stuck = r11, 0
			continue
		}
		return &MapGPAError{GPA: gpa, Size: size, Status: st, At: r11}
	}
}

// MapGPARetries is tdx_map_gpa()'s max_retries_per_page: "retrying the
// hypercall a second time should succeed; use 3 as a reasonable threshold
// to avoid looping forever" (arch/x86/coco/tdx/tdx.c).
const MapGPARetries = 3

// Stuck reports whether the host kept answering TDVMCALL_RETRY without
// progress until the guest gave up: a conversion that cannot complete.
func (e *MapGPAError) Stuck() bool { return e.Status == tdx.TDVMCallRetry }

// MapGPAError is a MapGPA the host refused.
type MapGPAError struct {
	GPA, Size, Status, At uint64
}

func (e *MapGPAError) Error() string {
	return fmt.Sprintf("MapGPA(%#x, %#x): TDVMCALL status %#x at %#x", e.GPA, e.Size, e.Status, e.At)
}

// ConvertToShared converts [lo, lo+n) to shared, as set_memory_decrypted()
// does: MapGPA with the shared bit. The private content is gone; the
// guest forgets it accepted the pages.
func (g *Guest) ConvertToShared(t *sched.Thread, v *tdx.VCPU, lo, n uint64) error {
	if err := g.MapGPA(t, v, lo|g.sharedBit, n); err != nil {
		return err
	}
	first, np := lo>>addr.PageShift, n>>addr.PageShift
	g.shared.setRange(first, np)
	g.accepted.clearRange(first, np)
	g.written.clearRange(first, np)
	g.c.toShared.Add(1)
	g.c.bytesShared.Add(n)
	return nil
}

// ConvertToPrivate converts [lo, lo+n) back to private and accepts it, as
// set_memory_encrypted() does (tdx_enc_status_changed() accepts right
// after MapGPA). The pages must then read zero.
func (g *Guest) ConvertToPrivate(t *sched.Thread, v *tdx.VCPU, lo, n uint64) error {
	if err := g.MapGPA(t, v, lo, n); err != nil {
		return err
	}
	first, np := lo>>addr.PageShift, n>>addr.PageShift
	g.shared.clearRange(first, np)
	g.c.toPrivate.Add(1)
	g.c.bytesPrivate.Add(n)
	return g.AcceptRange(t, v, lo, n)
}

// UseShared writes and reads every page of [lo, lo+n) through the shared
// alias, as a driver using a bounce buffer does: each must read zero
// before the first write (no private content may show through), then what
// was written.
func (g *Guest) UseShared(t *sched.Thread, v *tdx.VCPU, lo, n uint64) error {
	for gpa := lo; gpa < lo+n; gpa += addr.PageSize {
		alias := addr.GPA(gpa | g.sharedBit)
		got, err := v.Read(t, alias)
		if err != nil {
			return err
		}
		want := g.SharedTag(gpa)
		if got != 0 && got != want {
			g.fail("vCPU %d: shared gpa %#x reads tag %#x before the guest wrote it (private data showing through?)", v.ID(), gpa, uint64(got))
		} else if got != 0 && g.sharedZero.Load() {
			g.fail("vCPU %d: shared gpa %#x reads tag %#x before the guest wrote it, after a ZERO conversion", v.ID(), gpa, uint64(got))
		}
		if err := v.Write(t, alias, want); err != nil {
			return err
		}
		if got, err := v.Read(t, alias); err != nil {
			return err
		} else if got != want {
			g.fail("vCPU %d: shared gpa %#x reads %#x, wrote %#x", v.ID(), gpa, uint64(got), uint64(want))
		}
		g.c.shTouches.Add(1)
	}
	return nil
}

// RoundTrip converts [lo, lo+n) to shared, uses it through the shared
// alias when use is set, converts it back (which accepts it) and touches
// every page: private content must not survive the round trip, so each
// reads zero before the guest writes its tag again.
func (g *Guest) RoundTrip(t *sched.Thread, v *tdx.VCPU, lo, n uint64, use bool) error {
	if err := g.ConvertToShared(t, v, lo, n); err != nil {
		return err
	}
	if use {
		if err := g.UseShared(t, v, lo, n); err != nil {
			return err
		}
	}
	if err := g.ConvertToPrivate(t, v, lo, n); err != nil {
		return err
	}
	for gpa := lo; gpa < lo+n; gpa += addr.PageSize {
		if err := g.Touch(t, v, gpa, true); err != nil {
			return err
		}
	}
	return nil
}

// bitmap is one bit per 4 KiB page in atomic 64-bit words.
type bitmap []atomic.Uint64

func newBitmap(bits uint64) bitmap { return make(bitmap, (bits+63)/64) }

func (b bitmap) get(i uint64) bool {
	if i/64 >= uint64(len(b)) {
		return false
	}
	return b[i/64].Load()&(1<<(i%64)) != 0
}

func (b bitmap) set(i uint64) {
	if i/64 < uint64(len(b)) {
		b[i/64].Or(1 << (i % 64))
	}
}

// claim sets bit i and reports whether it was clear.
func (b bitmap) claim(i uint64) bool {
	if i/64 >= uint64(len(b)) {
		return false
	}
	return b[i/64].Or(1<<(i%64))&(1<<(i%64)) == 0
}

func (b bitmap) clear(i uint64) {
	if i/64 < uint64(len(b)) {
		b[i/64].And(^(uint64(1) << (i % 64)))
	}
}

func (b bitmap) setRange(first, n uint64) {
	for i := first; i < first+n; {
		if i%64 == 0 && i+64 <= first+n && i/64 < uint64(len(b)) {
			b[i/64].Store(^uint64(0))
			i += 64
			continue
		}
		b.set(i)
		i++
	}
}

func (b bitmap) clearRange(first, n uint64) {
	for i := first; i < first+n; {
		if i/64 >= uint64(len(b)) {
			return
		}
		if i%64 == 0 && i+64 <= first+n {
			b[i/64].Store(0)
			i += 64
			continue
		}
		b[i/64].And(^(uint64(1) << (i % 64)))
		i++
	}
}

// none reports whether no bit of [first, first+n) is set.
func (b bitmap) none(first, n uint64) bool {
	for i := first; i < first+n; {
		if i/64 >= uint64(len(b)) {
			return true
		}
		if i%64 == 0 && i+64 <= first+n {
			if b[i/64].Load() != 0 {
				return false
			}
			i += 64
			continue
		}
		if b.get(i) {
			return false
		}
		i++
	}
	return true
}
