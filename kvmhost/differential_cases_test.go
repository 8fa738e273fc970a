//go:build linux

package kvmhost

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/internal/testkit"
	"github.com/tdxsim/tdxsim/kvm"
	"github.com/tdxsim/tdxsim/sched"
)

// diff runs steps against both sides and records every disagreement.
type diff struct {
	real, model side
	steps       int
	mismatches  []string
	log         []string
}

func (d *diff) do(name string, f func(s side) result) result {
	if d.real == nil { // model only (FuzzModelAPI)
		m := f(d.model)
		d.steps++
		d.log = append(d.log, fmt.Sprintf("%4d %-60s model[%s]", d.steps, name, m))
		return m
	}
	r := f(d.real)
	m := f(d.model)
	d.steps++
	line := fmt.Sprintf("%4d %-60s real[%s] model[%s]", d.steps, name, r, m)
	d.log = append(d.log, line)
	if r != m {
		d.mismatches = append(d.mismatches, line)
	}
	return r
}

// hostConfig asks the real KVM what it supports and returns the model
// configuration that describes the same host.
func hostConfig() (kvm.Config, error) {
	k, err := Open()
	if err != nil {
		return kvm.Config{}, err
	}
	defer k.Close()
	cfg := kvm.DefaultConfig()
	types, err := CheckExtension(k.FD(), kvm.CapVMTypes)
	if err != nil || types <= 0 {
		types = 1 // a kernel without KVM_CAP_VM_TYPES has only the default VM
	}
	cfg.VMTypes = uint32(types)
	flags, _ := CheckExtension(k.FD(), kvm.CapGuestMemfdFlags)
	cfg.HugeTLBGmem = flags&4 != 0
	cfg.InPlaceConversion = false
	vm, err := k.CreateVM(0)
	if err != nil {
		return kvm.Config{}, err
	}
	defer unix.Close(vm)
	// Without CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES the ioctl is unknown.
	err = SetMemoryAttributes(vm, MemoryAttributes{Size: 4096})
	cfg.MemoryAttributes = !errors.Is(err, unix.ENOTTY)
	return cfg, nil
}

// hasGuestMemfd is nil when the host's KVM has guest_memfd: a kernel
// built without CONFIG_KVM_GUEST_MEMFD reports KVM_CAP_GUEST_MEMFD 0 and
// answers KVM_CREATE_GUEST_MEMFD with ENOTTY, and the model has no such
// configuration to compare against.
func hasGuestMemfd() error {
	k, err := Open()
	if err != nil {
		return err
	}
	defer k.Close()
	if n, err := CheckExtension(k.FD(), kvm.CapGuestMemfd); err != nil || n <= 0 {
		return fmt.Errorf("this kernel has no guest_memfd (KVM_CAP_GUEST_MEMFD %d, %v)", n, err)
	}
	return nil
}

// runDifferential runs script against the real kernel and the model in
// one simulated thread and fails the test on any disagreement.
func runDifferential(t *testing.T, script func(d *diff)) *diff {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("no usable /dev/kvm on this machine (%v): the differential test against the real kernel is skipped", err)
	}
	if err := hasGuestMemfd(); err != nil {
		t.Skipf("%v: the differential test against the real kernel is skipped", err)
	}
	cfg, err := hostConfig()
	if err != nil {
		t.Fatalf("probing the host's KVM: %v", err)
	}
	real, err := newRealSide()
	if err != nil {
		t.Fatalf("opening the real side: %v", err)
	}
	mem, err := hostmem.New(hostmem.Config{Bytes: 64 << 30}, nil)
	if err != nil {
		t.Fatal(err)
	}
	model := &modelSide{sys: kvm.NewSystem(cfg, mem, nil)}
	d := &diff{real: real, model: model}
	s := sched.New(sched.Deterministic, 1, nil)
	s.Go("differential", func(th *sched.Thread) {
		model.t = th
		script(d)
		real.cleanup()
		model.cleanup()
	})
	if err := s.Run(); err != nil {
		t.Fatalf("scheduler: %v", err)
	}
	if len(d.mismatches) > 0 {
		t.Errorf("%d of %d steps differ between the real kernel and the model:\n%s",
			len(d.mismatches), d.steps, strings.Join(d.mismatches, "\n"))
	}
	return d
}

func vmOf(d *diff) int {
	return int(d.do("KVM_CREATE_VM type 0", func(s side) result { return s.createVM(0) }).Ret)
}

func gmemOf(d *diff, vm int, size, flags uint64) int {
	return int(d.do(fmt.Sprintf("create gmem size %#x flags %d", size, flags), func(s side) result {
		return s.createGmem(vm, gmemArgs{size: size, flags: flags})
	}).Ret)
}

func reg(slot uint32, gpa, size, goff uint64, g int) region {
	return region{slot: slot, flags: uint32(kvm.MemGuestMemfd), gpa: gpa, size: size, goff: goff, fd: fdRef{fdGmem, g}}
}

func region2(d *diff, vm int, name string, r region) result {
	return d.do("REGION2 "+name, func(s side) result { return s.region2(vm, r) })
}

// TestDifferentialHostTable runs every case of the host table (create
// inputs, file operations, mmap, lifetime, memslot binding rules) against
// the real kernel and the model.
func TestDifferentialHostTable(t *testing.T) {
	d := runDifferential(t, func(d *diff) {
		capsTable(d)
		createTable(d)
		for _, fl := range []uint64{0, 1, 2, 3} {
			fileOpsTable(d, fl)
		}
		lifetimeTable(d)
		for _, fl := range []uint64{0, 3} {
			bindingTable(d, fl)
		}
	})
	t.Logf("host table: %d steps compared, %d differ", d.steps, len(d.mismatches))
}

func capsTable(d *diff) {
	caps := []int{kvm.CapNrMemslots, kvm.CapReadonlyMem, kvm.CapMultiAddressSpace, kvm.CapUserMemory2,
		kvm.CapMemoryFaultInfo, kvm.CapMemoryAttributes, kvm.CapGuestMemfd, kvm.CapVMTypes,
		kvm.CapPreFaultMemory, kvm.CapGuestMemfdFlags}
	for _, c := range caps {
		d.do(fmt.Sprintf("KVM_CHECK_EXTENSION /dev/kvm cap %d", c), func(s side) result { return s.checkExt(-1, c) })
	}
	for typ := uint64(1); typ < 16; typ++ {
		d.do(fmt.Sprintf("KVM_CREATE_VM type %d", typ), func(s side) result { return s.createVM(typ) })
	}
	vm := vmOf(d)
	for _, c := range caps {
		d.do(fmt.Sprintf("KVM_CHECK_EXTENSION vm cap %d", c), func(s side) result { return s.checkExt(vm, c) })
	}
}

func createTable(d *diff) {
	vm := vmOf(d)
	d.do("create gmem on /dev/kvm", func(s side) result { return s.createGmem(-1, gmemArgs{size: 2 * addr.MiB}) })
	type in struct {
		name string
		a    gmemArgs
	}
	for _, c := range []in{
		{"size 0", gmemArgs{size: 0}},
		{"size 4097", gmemArgs{size: 4097}},
		{"size 4096", gmemArgs{size: 4096}},
		{"size 2M+4096", gmemArgs{size: 2*addr.MiB + 4096}},
		{"size 1 TiB", gmemArgs{size: 1 << 40}},
		{"size 1<<62", gmemArgs{size: 1 << 62}},
		{"size 0x7ffffffffffff000", gmemArgs{size: 0x7ffffffffffff000}},
		{"size 1<<63", gmemArgs{size: 1 << 63}},
		{"size ~0xfff", gmemArgs{size: ^uint64(0xfff)}},
		{"flags 0", gmemArgs{size: 2 * addr.MiB}},
		{"flags MMAP", gmemArgs{size: 2 * addr.MiB, flags: 1}},
		{"flags INIT_SHARED alone", gmemArgs{size: 2 * addr.MiB, flags: 2}},
		{"flags MMAP|INIT_SHARED", gmemArgs{size: 2 * addr.MiB, flags: 3}},
		{"flags 4", gmemArgs{size: 2 * addr.MiB, flags: 4}},
		{"flags 1<<63", gmemArgs{size: 2 * addr.MiB, flags: 1 << 63}},
		{"reserved[0]=1", gmemArgs{size: 2 * addr.MiB, res0: 1}},
		{"reserved[5]=1", gmemArgs{size: 2 * addr.MiB, res5: 1}},
	} {
		d.do("create gmem "+c.name, func(s side) result { return s.createGmem(vm, c.a) })
	}
	for bit := 0; bit < 64; bit++ {
		d.do(fmt.Sprintf("create gmem flag bit %d", bit), func(s side) result {
			return s.createGmem(vm, gmemArgs{size: 4096, flags: 1 << bit})
		})
	}
	for sz := uint64(1); sz < 4096; sz += 511 {
		d.do(fmt.Sprintf("create gmem size %d", sz), func(s side) result { return s.createGmem(vm, gmemArgs{size: sz, flags: 3}) })
	}
}

func fileOpsTable(d *diff, flags uint64) {
	const size = 4 * addr.MiB
	vm := vmOf(d)
	g := gmemOf(d, vm, size, flags)
	fa := func(name string, mode uint32, off, length int64) {
		d.do(fmt.Sprintf("flags %d fallocate %s", flags, name), func(s side) result { return s.fallocate(g, mode, off, length) })
	}
	st := func(name string) {
		d.do(fmt.Sprintf("flags %d fstat %s", flags, name), func(s side) result { return fstat(s.file(g)) })
	}
	const keep, punch = 0x01, 0x02
	st("fresh")
	fa("mode 0", 0, 0, 4096)
	fa("KEEP_SIZE 0,2M", keep, 0, 2*addr.MiB)
	st("after alloc 2M")
	fa("KEEP_SIZE 0,2M again", keep, 0, 2*addr.MiB)
	fa("PUNCH 0,1M", keep|punch, 0, addr.MiB)
	st("after punch 1M")
	fa("PUNCH alone", punch, 0, 4096)
	fa("COLLAPSE_RANGE", 0x08, 0, 2*addr.MiB)
	fa("ZERO_RANGE", 0x10, 0, 4096)
	fa("ZERO_RANGE|KEEP", 0x11, 0, 4096)
	fa("INSERT_RANGE", 0x20, 0, 2*addr.MiB)
	fa("KEEP|UNSHARE", 0x41, 0, 2*addr.MiB)
	fa("KEEP off 1", keep, 1, 4096)
	fa("KEEP len 100", keep, 0, 100)
	fa("PUNCH off 1", keep|punch, 1, 4096)
	fa("PUNCH len 100", keep|punch, 0, 100)
	fa("KEEP len 0", keep, 0, 0)
	fa("KEEP off -4096", keep, -4096, 4096)
	fa("KEEP crosses EOF", keep, size-4096, 8192)
	fa("KEEP at EOF", keep, size, 4096)
	fa("KEEP beyond EOF", keep, 2*size, 4096)
	fa("PUNCH beyond EOF", keep|punch, 2*size, 4096)
	fa("PUNCH crosses EOF", keep|punch, size-4096, 8192)
	fa("PUNCH whole", keep|punch, 0, size)
	st("after punch whole")
	fa("KEEP whole", keep, 0, size)
	st("after alloc whole")
	for _, op := range []string{"read", "pread", "write", "pwrite", "lseek", "fsync"} {
		d.do(fmt.Sprintf("flags %d %s", flags, op), func(s side) result { return fileop(s.file(g), op) })
	}
	for _, sz := range []int64{8 * addr.MiB, 2 * addr.MiB, size} {
		d.do(fmt.Sprintf("flags %d ftruncate %d", flags, sz), func(s side) result { return s.ftruncate(g, sz) })
	}
	mm := func(name string, off, length uint64, prot int, shared bool) int {
		return int(d.do(fmt.Sprintf("flags %d mmap %s", flags, name), func(s side) result {
			return s.mmap(g, off, length, prot, shared)
		}).Ret)
	}
	const r, w, x = unix.PROT_READ, unix.PROT_WRITE, unix.PROT_EXEC
	m := mm("4M RW SHARED", 0, size, r|w, true)
	mm("4M RW PRIVATE", 0, size, r|w, false)
	mm("4M R SHARED", 0, size, r, true)
	mm("4M R PRIVATE", 0, size, r, false)
	mm("4M RWX SHARED", 0, size, r|w|x, true)
	mm("offset 1", 1, size, r|w, true)
	big := mm("8M RW SHARED", 0, 2*size, r|w, true)
	if m < 0 {
		return
	}
	ld := func(mp int, name string, off uint64) {
		d.do(fmt.Sprintf("flags %d load %s", flags, name), func(s side) result { return s.load(mp, off) })
	}
	sto := func(mp int, name string, off uint64, v byte) {
		d.do(fmt.Sprintf("flags %d store %s", flags, name), func(s side) result { return s.store(mp, off, v) })
	}
	ld(m, "page 1", 4096)
	sto(m, "page 1 = 0x5a", 4096, 0x5a)
	ld(m, "page 1 again", 4096)
	ld(big, "beyond EOF", size+1)
	fa("PUNCH all", keep|punch, 0, size)
	for p := uint64(0); p < 16; p++ {
		sto(m, fmt.Sprintf("page %d = %d", p, p), p*4096, byte(p))
	}
	st("after writes")
	ld(m, "page 5", 5*4096)
	fa("PUNCH page 5", keep|punch, 5*4096, 4096)
	ld(m, "page 5 after punch", 5*4096)
	ld(m, "page 6 after punch", 6*4096)
	ld(big, "page 6 through the second mapping", 6*4096)
	mad := func(name string, off, length uint64, advice int) {
		d.do(fmt.Sprintf("flags %d madvise %s", flags, name), func(s side) result { return s.madvise(m, off, length, advice) })
	}
	sto(m, "page 7 = 7", 7*4096, 7)
	sto(m, "page 8 = 8", 8*4096, 8)
	mad("DONTNEED page 7", 7*4096, 4096, unix.MADV_DONTNEED)
	ld(m, "page 7 after DONTNEED", 7*4096)
	mad("REMOVE page 8", 8*4096, 4096, unix.MADV_REMOVE)
	ld(m, "page 8 after REMOVE", 8*4096)
	mad("HUGEPAGE", 0, size, unix.MADV_HUGEPAGE)
	mad("POPULATE_WRITE", 0, size, unix.MADV_POPULATE_WRITE)
	mad("COLLAPSE", 0, size, unix.MADV_COLLAPSE)
	ld(m, "page 8 after POPULATE_WRITE", 8*4096)
	d.do(fmt.Sprintf("flags %d mprotect READ", flags), func(s side) result { return s.mprotect(m, unix.PROT_READ) })
	d.do(fmt.Sprintf("flags %d mprotect READ|EXEC", flags), func(s side) result { return s.mprotect(m, unix.PROT_READ|unix.PROT_EXEC) })
	d.do("munmap", func(s side) result { return s.munmap(m) })
}

func lifetimeTable(d *diff) {
	vm := vmOf(d)
	g := gmemOf(d, vm, 4*addr.MiB, 3)
	gmemOf(d, vm, 4*addr.MiB, 3)
	m := int(d.do("mmap 4M", func(s side) result { return s.mmap(g, 0, 4*addr.MiB, unix.PROT_READ|unix.PROT_WRITE, true) }).Ret)
	d.do("store page 3", func(s side) result { return s.store(m, 3*4096, 7) })
	d.do("close VM fd while gmem open", func(s side) result { return s.closeVM(vm) })
	d.do("create gmem on the closed VM fd", func(s side) result { return s.createGmem(vm, gmemArgs{size: 4096}) })
	d.do("fallocate after VM close", func(s side) result { return s.fallocate(g, 1, 0, 4096) })
	m2 := int(d.do("mmap after VM close", func(s side) result { return s.mmap(g, 0, 4*addr.MiB, unix.PROT_READ|unix.PROT_WRITE, true) }).Ret)
	d.do("read byte written before", func(s side) result { return s.load(m2, 3*4096) })
	d.do("punch after VM close", func(s side) result { return s.fallocate(g, 3, 3*4096, 4096) })
	d.do("read after punch", func(s side) result { return s.load(m, 3*4096) })
	d.do("close gmem while mapped", func(s side) result { return s.closeGmem(g) })
	d.do("read through the mapping after close", func(s side) result { return s.load(m2, 3*4096) })
	d.do("store through the mapping after close", func(s side) result { return s.store(m2, 9*4096, 9) })
	d.do("munmap 1", func(s side) result { return s.munmap(m) })
	d.do("munmap 2", func(s side) result { return s.munmap(m2) })
}

func bindingTable(d *diff, flags uint64) {
	const size = 16 * addr.MiB
	type row struct {
		name string
		r    func(g, other int) region
	}
	fresh := func() (int, int) {
		vm := vmOf(d)
		return vm, gmemOf(d, vm, size, flags)
	}
	single := []row{
		{"plain slot, no gmem flag", func(g, _ int) region { return region{slot: 1, size: 2 * addr.MiB} }},
		{"valid", func(g, _ int) region { return reg(1, 0, 2*addr.MiB, 0, g) }},
		{"offset 1", func(g, _ int) region { return reg(1, 0, 2*addr.MiB, 1, g) }},
		{"offset 4096", func(g, _ int) region { return reg(1, 0, 2*addr.MiB, 4096, g) }},
		{"offset 15M size 2M", func(g, _ int) region { return reg(1, 0, 2*addr.MiB, 15*addr.MiB, g) }},
		{"offset 14M size 2M", func(g, _ int) region { return reg(1, 0, 2*addr.MiB, 14*addr.MiB, g) }},
		{"offset 16M size 4K", func(g, _ int) region { return reg(1, 0, 4*addr.KiB, 16*addr.MiB, g) }},
		{"offset 2^63", func(g, _ int) region { return reg(1, 0, 4*addr.KiB, 1<<63, g) }},
		{"offset 2^64-4096", func(g, _ int) region { return reg(1, 0, 2*addr.MiB, ^uint64(4095), g) }},
		{"size 32M", func(g, _ int) region { return reg(1, 0, 32*addr.MiB, 0, g) }},
		{"/dev/null", func(g, _ int) region { r := reg(1, 0, 2*addr.MiB, 0, g); r.fd = fdRef{kind: fdDevNull}; return r }},
		{"memfd", func(g, _ int) region { r := reg(1, 0, 2*addr.MiB, 0, g); r.fd = fdRef{kind: fdMemfd}; return r }},
		{"fd 9999", func(g, _ int) region { r := reg(1, 0, 2*addr.MiB, 0, g); r.fd = fdRef{kind: fdBad}; return r }},
		{"fd -1", func(g, _ int) region { r := reg(1, 0, 2*addr.MiB, 0, g); r.fd = fdRef{kind: fdNeg}; return r }},
		{"GUEST_MEMFD|LOG_DIRTY", func(g, _ int) region { r := reg(1, 0, 2*addr.MiB, 0, g); r.flags |= 1; return r }},
		{"GUEST_MEMFD|READONLY", func(g, _ int) region { r := reg(1, 0, 2*addr.MiB, 0, g); r.flags |= 2; return r }},
		{"GUEST_MEMFD|bit3", func(g, _ int) region { r := reg(1, 0, 2*addr.MiB, 0, g); r.flags |= 8; return r }},
		{"ua unaligned", func(g, _ int) region { r := reg(1, 0, 2*addr.MiB, 0, g); r.ua = 0x1001; return r }},
		{"ua kernel address", func(g, _ int) region { r := reg(1, 0, 2*addr.MiB, 0, g); r.ua = 0xffff800000000000; return r }},
		{"ua unmapped", func(g, _ int) region { r := reg(1, 0, 2*addr.MiB, 0, g); r.ua = 0x100000000000; return r }},
		{"size 2M+1", func(g, _ int) region { return reg(1, 0, 2*addr.MiB+1, 0, g) }},
		{"gpa 0x1001", func(g, _ int) region { return reg(1, 0x1001, 2*addr.MiB, 0, g) }},
		{"delete nonexistent", func(g, _ int) region { return reg(1, 0, 0, 0, g) }},
		{"slot 32764", func(g, _ int) region { return reg(32764, 0, 2*addr.MiB, 0, g) }},
		{"slot 32763", func(g, _ int) region { return reg(32763, 0, 2*addr.MiB, 0, g) }},
		{"address space 1", func(g, _ int) region { return reg(1|1<<16, 0, 2*addr.MiB, 0, g) }},
		{"pad1 and pad2 set", func(g, _ int) region { r := reg(1, 0, 2*addr.MiB, 0, g); r.pad1, r.pad2 = 1, 1; return r }},
		{"no gmem flag, junk fd and offset", func(g, _ int) region {
			return region{slot: 1, size: 2 * addr.MiB, goff: 123, fd: fdRef{kind: fdBad}}
		}},
		{"VM fd as guest_memfd", func(g, other int) region { r := reg(1, 0, 2*addr.MiB, 0, g); r.fd = fdRef{fdVM, other}; return r }},
	}
	for _, rw := range single {
		vm, g := fresh()
		region2(d, vm, fmt.Sprintf("flags %d %s", flags, rw.name), rw.r(g, vm))
	}
	// Rows on top of a bound slot 1 = gmem [0, 2M) at GPA 0.
	bound := func() (int, int) {
		vm, g := fresh()
		region2(d, vm, "slot 1 at 0", reg(1, 0, 2*addr.MiB, 0, g))
		return vm, g
	}
	pair := []row{
		{"same gmem range on slot 2", func(g, _ int) region { return reg(2, 4*addr.MiB, 2*addr.MiB, 0, g) }},
		{"overlapping gmem range [1M,3M)", func(g, _ int) region { return reg(2, 4*addr.MiB, 2*addr.MiB, addr.MiB, g) }},
		{"one-page gmem overlap", func(g, _ int) region { return reg(2, 4*addr.MiB, 2*addr.MiB, 2*addr.MiB-4096, g) }},
		{"adjacent gmem range", func(g, _ int) region { return reg(2, 4*addr.MiB, 2*addr.MiB, 2*addr.MiB, g) }},
		{"re-set slot 1 identically", func(g, _ int) region { return reg(1, 0, 2*addr.MiB, 0, g) }},
		{"modify: drop gmem flag", func(g, _ int) region { return region{slot: 1, size: 2 * addr.MiB} }},
		{"modify: add LOG_DIRTY", func(g, _ int) region { r := reg(1, 0, 2*addr.MiB, 0, g); r.flags |= 1; return r }},
		{"modify: move gpa", func(g, _ int) region { return reg(1, 8*addr.MiB, 2*addr.MiB, 0, g) }},
		{"modify: change offset", func(g, _ int) region { return reg(1, 0, 2*addr.MiB, 2*addr.MiB, g) }},
		{"modify: change ua", func(g, _ int) region { r := reg(1, 0, 2*addr.MiB, 0, g); r.ua = 1 << 32; return r }},
		{"modify: change size", func(g, _ int) region { return reg(1, 0, 4*addr.MiB, 0, g) }},
		{"GPA overlap on slot 2", func(g, _ int) region { return reg(2, addr.MiB, 2*addr.MiB, 4*addr.MiB, g) }},
		{"delete with the gmem flag", func(g, _ int) region { return reg(1, 0, 0, 0, g) }},
		{"delete with flags 0", func(g, _ int) region { return region{slot: 1} }},
	}
	for _, rw := range pair {
		vm, g := bound()
		region2(d, vm, fmt.Sprintf("flags %d %s", flags, rw.name), rw.r(g, vm))
	}
	// Same range of a different gmem; another VM's gmem.
	vm, _ := bound()
	g2 := gmemOf(d, vm, size, flags)
	region2(d, vm, "same range of a different gmem", reg(2, 4*addr.MiB, 2*addr.MiB, 0, g2))
	other := vmOf(d)
	og := gmemOf(d, other, size, flags)
	region2(d, vm, "another VM's gmem", reg(3, 8*addr.MiB, 2*addr.MiB, 0, og))
	region2(d, other, "the other VM binds its own gmem", reg(3, 8*addr.MiB, 2*addr.MiB, 0, og))
	// Plain slot modifications.
	vm, g := fresh()
	region2(d, vm, "plain slot", region{slot: 1, size: 2 * addr.MiB})
	region2(d, vm, "plain slot + GUEST_MEMFD", reg(1, 0, 2*addr.MiB, 0, g))
	region2(d, vm, "plain slot: LOG_DIRTY on", region{slot: 1, size: 2 * addr.MiB, flags: 1})
	region2(d, vm, "plain slot: move", region{slot: 1, gpa: 8 * addr.MiB, size: 2 * addr.MiB, flags: 1})
	region2(d, vm, "plain slot: READONLY toggle", region{slot: 1, gpa: 8 * addr.MiB, size: 2 * addr.MiB, flags: 3})
	// Delete, then rebind and recreate; delete twice.
	vm, g = bound()
	region2(d, vm, "delete slot 1", region{slot: 1})
	region2(d, vm, "delete slot 1 again", region{slot: 1})
	region2(d, vm, "rebind the same range to slot 2", reg(2, 0, 2*addr.MiB, 0, g))
	region2(d, vm, "recreate slot 1 over slot 2's GPA", reg(1, 0, 2*addr.MiB, 2*addr.MiB, g))
	region2(d, vm, "recreate slot 1 elsewhere", reg(1, 4*addr.MiB, 2*addr.MiB, 2*addr.MiB, g))
	d.do("PUNCH on a bound range", func(s side) result { return s.fallocate(g, 3, 0, 2*addr.MiB) })
	d.do("KEEP_SIZE on a bound range", func(s side) result { return s.fallocate(g, 1, 0, 2*addr.MiB) })
	d.do("v1 REGION with GUEST_MEMFD", func(s side) result { return s.region1(vm, reg(5, 64*addr.MiB, 2*addr.MiB, 0, g)) })
	d.do("v1 REGION plain", func(s side) result { return s.region1(vm, region{slot: 5, gpa: 64 * addr.MiB, size: 2 * addr.MiB}) })
	d.do("KVM_SET_MEMORY_ATTRIBUTES PRIVATE", func(s side) result {
		return s.attributes(vm, kvm.MemoryAttributes{Address: 0, Size: 2 * addr.MiB, Attributes: 1 << 3})
	})
	// Close a bound gmem, bind a new one, delete and recreate.
	vm, g = bound()
	d.do("close bound gmem", func(s side) result { return s.closeGmem(g) })
	// Right after the close, before a new fd can take its number.
	region2(d, vm, "bind the closed gmem", reg(3, 8*addr.MiB, 2*addr.MiB, 4*addr.MiB, g))
	g3 := gmemOf(d, vm, size, flags)
	region2(d, vm, "bind a new gmem at slot 2", reg(2, 4*addr.MiB, 2*addr.MiB, 0, g3))
	region2(d, vm, "delete slot 1 (file closed)", region{slot: 1})
	region2(d, vm, "recreate slot 1 on the new gmem", reg(1, 0, 2*addr.MiB, 2*addr.MiB, g3))
	// Close the VM while a slot is bound.
	vm, g = bound()
	d.do("close VM with a bound slot", func(s side) result { return s.closeVM(vm) })
	d.do("PUNCH after VM close", func(s side) result { return s.fallocate(g, 3, 0, 2*addr.MiB) })
	d.do("close gmem", func(s side) result { return s.closeGmem(g) })
}

// TestDifferentialRandom runs random operation sequences from fixed seeds
// against the real kernel and the model.
func TestDifferentialRandom(t *testing.T) {
	seeds, ops := testkit.Seeds(48, 4), 400
	total := 0
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		d := runDifferential(t, func(d *diff) { randomScript(d, seed, ops) })
		total += d.steps
		if t.Failed() {
			t.Logf("seed %d failed; its last steps:\n%s", seed, strings.Join(d.log[max(0, len(d.log)-30):], "\n"))
			return
		}
	}
	t.Logf("%d seeds, %d steps compared, all agree", seeds, total)
}

func randomScript(d *diff, seed uint64, n int) {
	rng := rand.New(rand.NewPCG(seed, 0x7d5))
	type gm struct {
		h    int
		size uint64
	}
	type mp struct {
		h   int
		len uint64
	}
	var vms []int
	var gms []gm
	var maps []mp
	pick := func(xs []uint64) uint64 { return xs[rng.IntN(len(xs))] }
	sizes := []uint64{4 * addr.KiB, 64 * addr.KiB, 2 * addr.MiB, 4 * addr.MiB, 2*addr.MiB + 4*addr.KiB, 3 * 4096, 4097, 0}
	offs := []uint64{0, 4 * addr.KiB, 8 * addr.KiB, addr.MiB, 2 * addr.MiB, 4 * addr.MiB, 1, 100, 4095}
	vms = append(vms, vmOf(d))
	for i := 0; i < n; i++ {
		vm := vms[rng.IntN(len(vms))]
		switch k := rng.IntN(16); {
		case k == 0 && len(vms) < 3:
			vms = append(vms, vmOf(d))
		case k <= 2 && len(gms) < 5:
			size, flags := pick(sizes), pick([]uint64{0, 1, 2, 3, 4})
			r := d.do(fmt.Sprintf("create gmem %#x flags %d", size, flags), func(s side) result {
				return s.createGmem(vm, gmemArgs{size: size, flags: flags})
			})
			if r.Errno == 0 {
				gms = append(gms, gm{int(r.Ret), size})
			}
		case k <= 5 && len(gms) > 0:
			g := gms[rng.IntN(len(gms))]
			mode := uint32(pick([]uint64{1, 3, 1, 3, 0, 2, 0x11}))
			off, length := int64(pick(offs)), int64(pick(append(offs, g.size, g.size-4096)))
			d.do(fmt.Sprintf("fallocate mode %#x %#x+%#x", mode, off, length), func(s side) result {
				return s.fallocate(g.h, mode, off, length)
			})
		case k == 6 && len(gms) > 0:
			g := gms[rng.IntN(len(gms))]
			d.do("fstat", func(s side) result { return fstat(s.file(g.h)) })
		case k == 7 && len(gms) > 0 && len(maps) < 4:
			g := gms[rng.IntN(len(gms))]
			length := pick([]uint64{4 * addr.KiB, g.size, 2 * g.size, addr.MiB})
			off := pick([]uint64{0, 4 * addr.KiB, 1})
			prot := int(pick([]uint64{unix.PROT_READ | unix.PROT_WRITE, unix.PROT_READ, unix.PROT_READ | unix.PROT_EXEC}))
			shared := rng.IntN(4) > 0
			r := d.do(fmt.Sprintf("mmap %#x+%#x prot %d shared %v", off, length, prot, shared), func(s side) result {
				return s.mmap(g.h, off, length, prot, shared)
			})
			if r.Errno == 0 && prot&unix.PROT_WRITE != 0 {
				maps = append(maps, mp{int(r.Ret), length})
			} else if r.Errno == 0 {
				d.do("munmap read-only mapping", func(s side) result { return s.munmap(int(r.Ret)) })
			}
		case k <= 9 && len(maps) > 0:
			m := maps[rng.IntN(len(maps))]
			off := rng.Uint64N(m.len/4096)*4096 + rng.Uint64N(4096)
			if rng.IntN(2) == 0 {
				d.do(fmt.Sprintf("load %#x", off), func(s side) result { return s.load(m.h, off) })
			} else {
				v := byte(rng.IntN(256))
				d.do(fmt.Sprintf("store %#x = %d", off, v), func(s side) result { return s.store(m.h, off, v) })
			}
		case k <= 12:
			slot := uint32(rng.IntN(4))
			gpa := pick([]uint64{0, 2 * addr.MiB, 4 * addr.MiB, 1 << 32, 4096, 0x1001})
			size := pick([]uint64{0, 4 * addr.KiB, 2 * addr.MiB, 4 * addr.MiB, 2*addr.MiB + 1})
			r := region{slot: slot, gpa: gpa, size: size, goff: pick(offs), ua: pick([]uint64{0, 1 << 32, 0x1001}), fd: fdRef{kind: fdNeg}}
			if len(gms) > 0 && rng.IntN(4) > 0 {
				r.flags = uint32(kvm.MemGuestMemfd)
				r.fd = fdRef{fdGmem, gms[rng.IntN(len(gms))].h}
			}
			r.flags |= uint32(pick([]uint64{0, 0, 0, 1, 2}))
			if rng.IntN(10) == 0 {
				r.fd = fdRef{kind: fdKind(2 + rng.IntN(4))}
			}
			d.do(fmt.Sprintf("REGION2 slot %d flags %#x gpa %#x size %#x off %#x ua %#x fd %v", r.slot, r.flags, r.gpa, r.size, r.goff, r.ua, r.fd),
				func(s side) result { return s.region2(vm, r) })
		case k == 13 && len(gms) > 0:
			g := gms[rng.IntN(len(gms))]
			op := []string{"read", "write", "pread", "pwrite", "lseek", "fsync"}[rng.IntN(6)]
			d.do(op, func(s side) result { return fileop(s.file(g.h), op) })
		case k == 14 && len(gms) > 0 && rng.IntN(3) == 0:
			i := rng.IntN(len(gms))
			g := gms[i]
			d.do("close gmem", func(s side) result { return s.closeGmem(g.h) })
			gms = append(gms[:i], gms[i+1:]...)
		case k == 15 && len(maps) > 0:
			i := rng.IntN(len(maps))
			m := maps[i]
			d.do("munmap", func(s side) result { return s.munmap(m.h) })
			maps = append(maps[:i], maps[i+1:]...)
		}
	}
}

// FuzzModelAPI drives the model's ioctl-level API (KVM_CREATE_VM,
// KVM_CREATE_GUEST_MEMFD, fallocate, mmap and touches,
// KVM_SET_USER_MEMORY_REGION2 with any flags, file operations, close) with
// the differential test's random operation sequences, model only, with
// in-place conversion and HugeTLB guest_memfd on: nothing may panic, and
// every failure must be an errno (go test -fuzz=FuzzModelAPI ./kvmhost).
func FuzzModelAPI(f *testing.F) {
	for _, s := range []uint64{1, 2, 3, 4} {
		f.Add(s, uint16(200))
	}
	f.Fuzz(func(t *testing.T, seed uint64, n uint16) {
		mem, err := hostmem.New(hostmem.Config{Bytes: 64 << 30, Huge2M: 64}, nil)
		if err != nil {
			t.Fatal(err)
		}
		model := &modelSide{sys: kvm.NewSystem(kvm.DefaultConfig(), mem, nil)}
		d := &diff{model: model}
		s := sched.New(sched.Deterministic, seed, nil)
		s.Go("fuzz", func(th *sched.Thread) {
			model.t = th
			randomScript(d, seed, int(n%1000))
			model.cleanup()
		})
		if err := s.Run(); err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, strings.Join(d.log[max(0, len(d.log)-20):], "\n"))
		}
		for _, l := range d.log {
			if strings.HasSuffix(l, "model[ret=-1]") {
				t.Fatalf("a failure without an errno: %s", l)
			}
		}
	})
}
