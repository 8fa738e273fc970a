package kvm_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/kvm"
)

// The conformance checklist: one row per behaviour of the kernel's own
// selftests list them (guest_memfd_test.c,
// set_memory_region_test.c, private_mem_conversions_test.c and the TDX
// conversion tests), each asserting the kernel's result on the model.

type conformanceRow struct {
	id, test string
	skip     string // why the row does not apply to the model
	check    func(w *world) error
}

const page = 4096

func errnoIs(what string, err error, want errno.Errno) error {
	if got := errno.Of(err); got != want {
		return fmt.Errorf("%s: got %v (%v), want %v", what, got, err, want)
	}
	return nil
}

// vmTypes is every VM type the host reports in KVM_CAP_VM_TYPES, as the
// selftest iterates them.
func vmTypes(w *world) []kvm.VMType {
	mask := w.KVM.CheckExtension(kvm.CapVMTypes)
	var out []kvm.VMType
	for typ := kvm.VMType(0); typ < 32; typ++ {
		if mask&(1<<typ) != 0 {
			out = append(out, typ)
		}
	}
	return out
}

// flagSets is the selftest's per-VM list: 0, MMAP, MMAP|INIT_SHARED as
// supported.
func flagSets(vm *kvm.VM) []uint64 {
	sup, _ := vm.CheckExtension(kvm.CapGuestMemfdFlags)
	sets := []uint64{0}
	if uint64(sup)&gmem.FlagMMAP != 0 {
		sets = append(sets, gmem.FlagMMAP)
		if uint64(sup)&gmem.FlagInitShared != 0 {
			sets = append(sets, gmem.FlagMMAP|gmem.FlagInitShared)
		}
	}
	return sets
}

func eachVMAndFlags(w *world, fn func(vm *kvm.VM, flags uint64) error) error {
	for _, typ := range vmTypes(w) {
		vm := w.vm(typ)
		for _, fl := range flagSets(vm) {
			if err := fn(vm, fl); err != nil {
				return fmt.Errorf("%v flags %#x: %w", typ, fl, err)
			}
		}
	}
	return nil
}

func sharedMmap(w *world, f *gmem.File, length uint64) (*gmem.Mapping, error) {
	return f.Mmap(w.th, 0, length, gmem.ProtRead|gmem.ProtWrite, true)
}

// hostMapped is a default VM's mmap-able, INIT_SHARED guest_memfd of size
// bytes, mapped shared and writable for length bytes.
func hostMapped(w *world, size, length uint64) (*gmem.File, *gmem.Mapping, error) {
	f := w.gmem(w.vm(kvm.DefaultVM), gmem.CreateArgs{Size: size, Flags: gmem.FlagMMAP | gmem.FlagInitShared})
	m, err := sharedMmap(w, f, length)
	return f, m, err
}

var conformance = []conformanceRow{
	{"S1.1", "guest_memfd_flags", "", func(w *world) error {
		for _, typ := range vmTypes(w) {
			vm := w.vm(typ)
			sup, _ := vm.CheckExtension(kvm.CapGuestMemfdFlags)
			for bit := 0; bit < 64; bit++ {
				fl := uint64(1) << bit
				a := gmem.CreateArgs{Size: page, Flags: fl}
				if fl == gmem.FlagHugeTLB {
					continue // needs a page order and a 2M size: TestHugeTLBGmem
				}
				_, err := vm.CreateGuestMemfd(w.th, a)
				want := errno.EINVAL
				if uint64(sup)&fl != 0 {
					want = 0
				}
				if e := errnoIs(fmt.Sprintf("%v flag bit %d", typ, bit), err, want); e != nil {
					return e
				}
			}
		}
		return nil
	}},
	{"S1.2", "create_multiple", "", func(w *world) error {
		vm := w.vm(kvm.DefaultVM)
		a, b := w.gmem(vm, gmem.CreateArgs{Size: page}), w.gmem(vm, gmem.CreateArgs{Size: 2 * page})
		sa, _ := a.Fstat()
		sb, _ := b.Fstat()
		if sa.Size != page || sb.Size != 2*page || a.Ino() == b.Ino() {
			return fmt.Errorf("sizes %d/%d inos %d/%d", sa.Size, sb.Size, a.Ino(), b.Ino())
		}
		return nil
	}},
	{"S1.3", "create_invalid_sizes", "", func(w *world) error {
		return eachVMAndFlags(w, func(vm *kvm.VM, fl uint64) error {
			for sz := uint64(1); sz < page; sz++ {
				_, err := vm.CreateGuestMemfd(w.th, gmem.CreateArgs{Size: sz, Flags: fl})
				if e := errnoIs(fmt.Sprintf("size %d", sz), err, errno.EINVAL); e != nil {
					return e
				}
			}
			return nil
		})
	}},
	{"S1.4", "file_read_write", "", func(w *world) error {
		return eachVMAndFlags(w, func(vm *kvm.VM, fl uint64) error {
			f := w.gmem(vm, gmem.CreateArgs{Size: page, Flags: fl})
			for name, err := range map[string]error{"read": f.Read(64), "write": f.Write(64), "pread": f.Pread(64, 0), "pwrite": f.Pwrite(64, 0)} {
				if err == nil {
					return fmt.Errorf("%s succeeded", name)
				}
			}
			return nil
		})
	}},
	{"S1.5", "mmap_supported", "", func(w *world) error {
		f, m, err := hostMapped(w, 4*page, 4*page)
		if err != nil {
			return err
		}
		for off := uint64(0); off < 4*page; off += 512 {
			if err := m.Store(w.th, off, 0xaa); err != nil {
				return err
			}
		}
		if err := f.Fallocate(w.th, gmem.FallocPunchHole|gmem.FallocKeepSize, 0, page); err != nil {
			return err
		}
		for off := uint64(0); off < 4*page; off += 512 {
			v, err := m.Load(w.th, off)
			want := byte(0xaa)
			if off < page {
				want = 0
			}
			if err != nil || v != want {
				return fmt.Errorf("offset %#x reads %#x (%v), want %#x", off, v, err, want)
			}
		}
		return m.Store(w.th, 0, 0xaa)
	}},
	{"S1.6", "fault_overflow", "", func(w *world) error {
		_, m, err := hostMapped(w, 4*page, 16*page)
		if err != nil {
			return err
		}
		for off := uint64(0); off < 4*page; off += page {
			m.Store(w.th, off, 0xaa)
		}
		if err := m.Store(w.th, 4*page, 0xaa); !errors.Is(err, gmem.ErrSIGBUS) {
			return fmt.Errorf("store past EOF: %v, want SIGBUS", err)
		}
		if _, err := m.Load(w.th, 4*page); !errors.Is(err, gmem.ErrSIGBUS) {
			return fmt.Errorf("load past EOF: %v, want SIGBUS", err)
		}
		if v, _ := m.Load(w.th, 3*page); v != 0xaa {
			return fmt.Errorf("in-file byte lost")
		}
		return nil
	}},
	{"S1.7", "numa_allocation / mbind", "the model has one NUMA node; mempolicy is not modelled", nil},
	{"S1.8", "collapse", "", func(w *world) error {
		_, m, _ := hostMapped(w, 2*addr.MiB, 2*addr.MiB)
		m.Store(w.th, 0, 1)
		if err := errnoIs("MADV_HUGEPAGE", m.Madvise(w.th, 0, 2*addr.MiB, gmem.MadvHugepage), 0); err != nil {
			return err
		}
		if err := errnoIs("MADV_COLLAPSE", m.Madvise(w.th, 0, 2*addr.MiB, gmem.MadvCollapse), errno.EINVAL); err != nil {
			return err
		}
		if err := errnoIs("MADV_DONTNEED", m.Madvise(w.th, 0, 2*addr.MiB, gmem.MadvDontneed), 0); err != nil {
			return err
		}
		if v, err := m.Load(w.th, 0); err != nil || v != 1 {
			return fmt.Errorf("refault after DONTNEED: %v %v", v, err)
		}
		return nil
	}},
	{"S1.9", "fault_private", "", func(w *world) error {
		vm := w.vm(kvm.DefaultVM)
		f := w.gmem(vm, gmem.CreateArgs{Size: page, Flags: gmem.FlagMMAP})
		m, err := sharedMmap(w, f, page)
		if err != nil {
			return fmt.Errorf("mmap itself must succeed: %v", err)
		}
		if _, err := m.Load(w.th, 0); !errors.Is(err, gmem.ErrSIGBUS) {
			return fmt.Errorf("touch of a private-only file: %v, want SIGBUS", err)
		}
		return nil
	}},
	{"S1.10", "mmap_cow", "", func(w *world) error {
		vm := w.vm(kvm.DefaultVM)
		f := w.gmem(vm, gmem.CreateArgs{Size: page, Flags: gmem.FlagMMAP | gmem.FlagInitShared})
		_, err := f.Mmap(w.th, 0, page, gmem.ProtRead|gmem.ProtWrite, false)
		return errnoIs("MAP_PRIVATE", err, errno.EINVAL)
	}},
	{"S1.11", "mmap_not_supported", "", func(w *world) error {
		vm := w.vm(kvm.DefaultVM)
		f := w.gmem(vm, gmem.CreateArgs{Size: 4 * page})
		for _, l := range []uint64{page, 4 * page} {
			if _, err := sharedMmap(w, f, l); errno.Of(err) != errno.ENODEV {
				return fmt.Errorf("mmap %d without MMAP: %v, want ENODEV", l, err)
			}
		}
		return nil
	}},
	{"S1.12", "file_size", "", func(w *world) error {
		return eachVMAndFlags(w, func(vm *kvm.VM, fl uint64) error {
			f := w.gmem(vm, gmem.CreateArgs{Size: 4 * page, Flags: fl})
			st, err := f.Fstat()
			if err != nil || st.Size != 4*page || st.Blksize != page {
				return fmt.Errorf("fstat %+v %v", st, err)
			}
			return nil
		})
	}},
	{"S1.13", "fallocate", "", func(w *world) error {
		return eachVMAndFlags(w, func(vm *kvm.VM, fl uint64) error {
			const size = 4 * page
			const keep, punch = gmem.FallocKeepSize, gmem.FallocPunchHole | gmem.FallocKeepSize
			f := w.gmem(vm, gmem.CreateArgs{Size: size, Flags: fl})
			for _, c := range []struct {
				mode        uint32
				off, length int64
				ok          bool
			}{
				{keep, 0, size, true}, {punch, page - 1, page, false}, {keep, size, page, false},
				{keep, size + page, page, false}, {punch, size, page, true}, {punch, size + page, page, true},
				{punch, page, page - 1, false}, {punch, page, page, true}, {keep, page, page, true},
			} {
				err := f.Fallocate(w.th, c.mode, c.off, c.length)
				if (err == nil) != c.ok {
					return fmt.Errorf("fallocate(%#x, %#x, %#x) = %v, want ok=%v", c.mode, c.off, c.length, err, c.ok)
				}
			}
			return nil
		})
	}},
	{"S1.14", "invalid_punch_hole", "", func(w *world) error {
		return eachVMAndFlags(w, func(vm *kvm.VM, fl uint64) error {
			f := w.gmem(vm, gmem.CreateArgs{Size: 4 * page, Flags: fl})
			for _, c := range [][2]int64{{0, 1}, {0, page - 1}, {0, page + 1}, {1, 1}, {1, page - 1}, {1, page}, {1, page + 1}, {page, 1}, {page, page - 1}, {page, page + 1}} {
				err := f.Fallocate(w.th, gmem.FallocPunchHole|gmem.FallocKeepSize, c[0], c[1])
				if e := errnoIs(fmt.Sprintf("punch %v", c), err, errno.EINVAL); e != nil {
					return e
				}
			}
			return nil
		})
	}},
	{"S1.15", "guest_memfd_guest", "", func(w *world) error {
		if sup := w.KVM.CheckExtension(kvm.CapGuestMemfdFlags); uint64(sup)&(gmem.FlagMMAP|gmem.FlagInitShared) != gmem.FlagMMAP|gmem.FlagInitShared {
			return fmt.Errorf("default VM caps %#x lack MMAP|INIT_SHARED", sup)
		}
		vm := w.vm(kvm.DefaultVM)
		f := w.gmem(vm, gmem.CreateArgs{Size: 2 * addr.MiB, Flags: gmem.FlagMMAP | gmem.FlagInitShared})
		w.slot(vm, 1, 4*addr.GiB, 2*addr.MiB, f, 0)
		m, _ := sharedMmap(w, f, 2*addr.MiB)
		m.Store(w.th, page+8, 0xaa)
		v, _ := vm.CreateVCPU(w.th, 0)
		fault, err := v.FaultInPFN(w.th, gfn(4*addr.GiB+page), false)
		if err != nil || !fault.HasPFN {
			return fmt.Errorf("guest access to a gmem-only slot: %+v %v", fault, err)
		}
		if b := w.Mem.Bytes(fault.PFN); b == nil || b[8] != 0xaa {
			return fmt.Errorf("guest does not see the host's 0xaa")
		}
		page := append([]byte(nil), w.Mem.Bytes(fault.PFN)...)
		page[8] = 0xff
		w.Mem.WriteBytes(w.th, fault.PFN, page, hostmem.MakeTag(1, 1))
		w.Mem.Put(w.th, fault.PFN)
		if v, _ := m.Load(w.th, 4096+8); v != 0xff {
			return fmt.Errorf("host reads %#x after the guest wrote 0xff", v)
		}
		return nil
	}},
	{"S3.1", "invalid flags: v1 ioctl with KVM_MEM_GUEST_MEMFD", "", func(w *world) error {
		vm := w.vm(kvm.SWProtectedVM)
		return errnoIs("v1", vm.SetUserMemoryRegion(w.th, kvm.Region{Slot: 1, Flags: kvm.MemGuestMemfd, MemorySize: 2 * addr.MiB}), errno.EINVAL)
	}},
	{"S3.2", "invalid flags: v2 with unsupported bits, LOG_DIRTY|GUEST_MEMFD", "", func(w *world) error {
		vm := w.vm(kvm.SWProtectedVM)
		f := w.gmem(vm, gmem.CreateArgs{Size: 2 * addr.MiB})
		for bit := 0; bit < 32; bit++ {
			fl := uint32(1) << bit
			if fl&(kvm.MemLogDirtyPages|kvm.MemReadonly|kvm.MemGuestMemfd) != 0 {
				continue
			}
			r := kvm.Region{Slot: 1, Flags: fl | kvm.MemGuestMemfd, MemorySize: 2 * addr.MiB, GuestMemfd: kvm.FD{File: f}}
			if e := errnoIs(fmt.Sprintf("flag bit %d", bit), vm.SetUserMemoryRegion2(w.th, r), errno.EINVAL); e != nil {
				return e
			}
		}
		r := kvm.Region{Slot: 1, Flags: kvm.MemLogDirtyPages | kvm.MemGuestMemfd, MemorySize: 2 * addr.MiB, GuestMemfd: kvm.FD{File: f}}
		return errnoIs("LOG_DIRTY|GUEST_MEMFD", vm.SetUserMemoryRegion2(w.th, r), errno.EINVAL)
	}},
	{"S3.3", "add_private_memory_region: bad files, other VM's gmem, offsets", "", func(w *world) error {
		vm, other := w.vm(kvm.SWProtectedVM), w.vm(kvm.SWProtectedVM)
		og := w.gmem(other, gmem.CreateArgs{Size: 4 * addr.MiB})
		for name, fd := range map[string]kvm.FD{"/dev/kvm": {Other: "/dev/kvm"}, "VM fd": {Other: "VM fd"},
			"memfd": {Other: "memfd"}, "other VM's gmem": {File: og}} {
			r := kvm.Region{Slot: 1, Flags: kvm.MemGuestMemfd, MemorySize: 2 * addr.MiB, GuestMemfd: fd}
			if e := errnoIs(name, vm.SetUserMemoryRegion2(w.th, r), errno.EINVAL); e != nil {
				return e
			}
		}
		if err := other.SetUserMemoryRegion2(w.th, kvm.Region{Slot: 1, Flags: kvm.MemGuestMemfd, MemorySize: 2 * addr.MiB, GuestMemfd: kvm.FD{File: og}}); err != nil {
			return fmt.Errorf("the owner binds its own gmem: %v", err)
		}
		f := w.gmem(vm, gmem.CreateArgs{Size: 4 * addr.MiB})
		for off := uint64(1); off < page; off += 97 {
			r := kvm.Region{Slot: 1, Flags: kvm.MemGuestMemfd, MemorySize: 2 * addr.MiB, GuestMemfd: kvm.FD{File: f}, GuestMemfdOffset: off}
			if e := errnoIs(fmt.Sprintf("offset %d", off), vm.SetUserMemoryRegion2(w.th, r), errno.EINVAL); e != nil {
				return e
			}
		}
		return vm.SetUserMemoryRegion2(w.th, kvm.Region{Slot: 1, Flags: kvm.MemGuestMemfd, MemorySize: 2 * addr.MiB, GuestMemfd: kvm.FD{File: f}})
	}},
	{"S3.4", "add_overlapping_private_memory_regions", "", func(w *world) error {
		vm := w.vm(kvm.SWProtectedVM)
		const gpa, s = 1 << 30, 2 * addr.MiB
		f := w.gmem(vm, gmem.CreateArgs{Size: 4 * s})
		w.slot(vm, 10, gpa, 2*s, f, 0)
		w.slot(vm, 11, 2*gpa, 2*s, f, 2*s)
		w.slot(vm, 10, gpa, 0, f, 0)
		for _, at := range []uint64{2*gpa - s, 2*gpa + s} {
			r := kvm.Region{Slot: 10, Flags: kvm.MemGuestMemfd, GuestPhysAddr: at, MemorySize: 2 * s, GuestMemfd: kvm.FD{File: f}}
			if e := errnoIs(fmt.Sprintf("GPA overlap at %#x", at), vm.SetUserMemoryRegion2(w.th, r), errno.EEXIST); e != nil {
				return e
			}
		}
		return nil
	}},
	{"S2.1", "memory is shared by default; the guest sees the host's writes", "", func(w *world) error {
		c := newConv(w)
		c.hostWrite(0, 0xaa)
		return c.expect("guest read of shared memory", 0, false, 0xaa)
	}},
	{"S2.2", "converting to private leaves the host's shared view alone", "", func(w *world) error {
		c := newConv(w)
		c.hostWrite(0, 0x11)
		w.attrs(c.vm, c.base, page, true)
		if err := c.guestWrite(0, true, 0x22); err != nil {
			return err
		}
		if v := c.host[c.hva(0)]; v != 0x11 {
			return fmt.Errorf("host view %#x, want 0x11", v)
		}
		return c.expect("guest private read", 0, true, 0x22)
	}},
	{"S2.3", "a shared access to a private page exits to userspace (implicit conversion)", "", func(w *world) error {
		c := newConv(w)
		w.attrs(c.vm, c.base, page, true)
		_, err := c.v.FaultInPFN(w.th, gfn(c.base), false)
		var mf *kvm.MemoryFault
		if !errors.As(err, &mf) || mf.Errno != errno.EFAULT || mf.Private || mf.Size != page || mf.GPA != c.base {
			return fmt.Errorf("got %v, want KVM_EXIT_MEMORY_FAULT gpa %#x size 4096 flags 0, EFAULT", err, c.base)
		}
		return nil
	}},
	{"S2.4", "back to shared: the guest sees the host's memory again; private mappings zapped", "", func(w *world) error {
		c := newConv(w)
		c.hostWrite(0, 0x11)
		w.attrs(c.vm, c.base, 2*addr.MiB, true)
		c.guestWrite(0, true, 0x22)
		c.mmu.take()
		w.attrs(c.vm, c.base, 2*addr.MiB, false)
		want := []string{fmt.Sprintf("split [%#x,%#x)", c.base>>12, (c.base+2*addr.MiB)>>12), fmt.Sprintf("unmap private [%#x,%#x)", c.base>>12, (c.base+2*addr.MiB)>>12)}
		if got := c.mmu.take(); len(got) < 2 || got[0] != want[0] || got[1] != want[1] {
			return fmt.Errorf("private zap on conversion to shared: %q", got)
		}
		return c.expect("guest shared read", 0, false, 0x11)
	}},
	{"S2.5", "shared with PUNCH_HOLE frees the private page; private again reads zero", "", func(w *world) error {
		c := newConv(w)
		w.attrs(c.vm, c.base, page, true)
		c.guestWrite(0, true, 0x22)
		before := c.f.Pages()
		w.attrs(c.vm, c.base, page, false)
		c.f.Fallocate(w.th, gmem.FallocPunchHole|gmem.FallocKeepSize, 0, page)
		if c.f.Pages() != before-1 {
			return fmt.Errorf("punch did not free the private page")
		}
		w.attrs(c.vm, c.base, page, true)
		return c.expect("guest private read after re-conversion", 0, true, 0)
	}},
	{"S2.6", "PUNCH_HOLE without an attribute change: the guest reads zero", "", func(w *world) error {
		c := newConv(w)
		w.attrs(c.vm, c.base, 2*addr.MiB, true)
		c.guestWrite(page, true, 0xcc)
		c.mmu.take()
		c.f.Fallocate(w.th, gmem.FallocPunchHole|gmem.FallocKeepSize, page, page)
		if got := c.mmu.take(); len(got) < 2 || got[1] != fmt.Sprintf("unmap private [%#x,%#x)", (c.base+page)>>12, (c.base+2*page)>>12) {
			return fmt.Errorf("punch must zap the private mapping: %q", got)
		}
		return c.expect("guest read after punch", page, true, 0)
	}},
	{"S2.7", "after the VM is freed, PUNCH_HOLE and allocate on the gmem still succeed", "", func(w *world) error {
		c := newConv(w)
		c.vm.Close(w.th)
		if err := c.f.Fallocate(w.th, gmem.FallocPunchHole|gmem.FallocKeepSize, 0, 2*addr.MiB); err != nil {
			return err
		}
		return c.f.Fallocate(w.th, gmem.FallocKeepSize, 0, 2*addr.MiB)
	}},
}

// conv is the private_mem_conversions_test setup: a SW-protected VM, one
// guest_memfd slot at 4 GiB, the VMM's shared memory at the slot's
// userspace address.
type conv struct {
	w    *world
	vm   *kvm.VM
	v    *kvm.VCPU
	f    *gmem.File
	mmu  *recMMU
	base uint64
	host map[uint64]byte // the VMM's memory, by HVA
}

func newConv(w *world) *conv {
	c := &conv{w: w, vm: w.vm(kvm.SWProtectedVM), base: 4 * addr.GiB, host: map[uint64]byte{}}
	c.mmu = &recMMU{t: w.t, vm: c.vm}
	c.vm.SetMMU(c.mmu)
	c.f = w.gmem(c.vm, gmem.CreateArgs{Size: 4 * addr.MiB})
	w.slot(c.vm, 10, c.base, 4*addr.MiB, c.f, 0)
	c.v, _ = c.vm.CreateVCPU(w.th, 0)
	return c
}

func (c *conv) hva(off uint64) uint64 { return 1<<40 + off }

func (c *conv) hostWrite(off uint64, v byte) { c.host[c.hva(off)] = v }

// guestWrite and guestRead access the first byte of a page the way KVM
// resolves it: private pages through guest_memfd (content tags stand for
// bytes), shared ones through the VMM's memory.
func (c *conv) guestWrite(off uint64, private bool, v byte) error {
	f, err := c.v.FaultInPFN(c.w.th, gfn(c.base+off), private)
	if err != nil {
		return err
	}
	if !f.HasPFN {
		c.host[f.HVA] = v
		return nil
	}
	defer c.w.Mem.Put(c.w.th, f.PFN)
	return c.w.Mem.SetTag(c.w.th, f.PFN, hostmem.Tag(v))
}

func (c *conv) guestRead(off uint64, private bool) (byte, error) {
	f, err := c.v.FaultInPFN(c.w.th, gfn(c.base+off), private)
	if err != nil {
		return 0, err
	}
	if !f.HasPFN {
		return c.host[f.HVA], nil
	}
	defer c.w.Mem.Put(c.w.th, f.PFN)
	return byte(c.w.Mem.Tag(f.PFN)), nil
}

func (c *conv) expect(what string, off uint64, private bool, want byte) error {
	v, err := c.guestRead(off, private)
	if err != nil || v != want {
		return fmt.Errorf("%s: %#x (%v), want %#x", what, v, err, want)
	}
	return nil
}

// TestConformance runs the checklist; each row is a subtest named by its
// id and selftest.
func TestConformance(t *testing.T) {
	for _, row := range conformance {
		t.Run(row.id+"_"+row.test, func(t *testing.T) {
			if row.skip != "" {
				t.Skip(row.skip)
			}
			run(t, func(w *world) {
				if err := row.check(w); err != nil {
					t.Errorf("%s %s: %v", row.id, row.test, err)
				}
			})
		})
	}
}
