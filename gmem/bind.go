package gmem

import (
	"fmt"
	"sort"

	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/internal/mutation"
	"github.com/tdxsim/tdxsim/sched"
)

// Bind attaches slot to file indexes [offset/4K, offset/4K + slot.NPages()).
// Kernel: kvm_gmem_bind() (v6.19/v7.0). Errors: offset negative as loff_t,
// unaligned, or the range past i_size; the range already bound to another
// slot (EINVAL; kvm-x86 next returns EEXIST, see docs/policies.md); a file of
// another VM (EINVAL); a closed file (EBADF). The caller holds slots_lock.
func (f *File) Bind(t *sched.Thread, owner Owner, slot Slot, offset uint64) error {
	const op = "KVM_SET_USER_MEMORY_REGION2"
	if err := f.badf(op); err != nil {
		return err
	}
	if owner != f.owner {
		return errno.New(op, errno.EINVAL, "guest_memfd belongs to another VM")
	}
	size := slot.NPages() << pageShift
	if int64(offset) < 0 || offset%PageSize != 0 || offset+size > f.size || offset+size < offset {
		return errno.Newf(op, errno.EINVAL, "guest_memfd_offset %#x + size %#x must be page aligned and within the file (%#x)", offset, size, f.size)
	}
	f.invalidate.Lock(t)
	defer f.invalidate.Unlock(t)
	f.pc.Lock()
	defer f.pc.Unlock()
	start, end := offset>>pageShift, offset>>pageShift+slot.NPages()
	i := sort.Search(len(f.bindings), func(i int) bool { return f.bindings[i].end > start })
	if i < len(f.bindings) && f.bindings[i].start < end {
		b := f.bindings[i]
		return errno.Newf(op, errno.EINVAL, "guest_memfd range [%#x, %#x) overlaps a range already bound at [%#x, %#x)",
			offset, offset+size, b.start<<pageShift, b.end<<pageShift)
	}
	f.bindings = append(f.bindings, binding{})
	copy(f.bindings[i+1:], f.bindings[i:])
	f.bindings[i] = binding{start: start, end: end, slot: slot}
	return nil
}

// Unbind detaches slot (kvm_gmem_unbind, on memslot deletion). Nothing to do
// once the file was released.
func (f *File) Unbind(t *sched.Thread, slot Slot) {
	// Released takes f.pc: release sets the flag under it while a vCPU
	// thread may unbind (a memslot deleted as the file goes).
	if f.Released() {
		return
	}
	f.invalidate.Lock(t)
	defer f.invalidate.Unlock(t)
	f.pc.Lock()
	defer f.pc.Unlock()
	for i, b := range f.bindings {
		if b.slot == slot {
			f.bindings = append(f.bindings[:i], f.bindings[i+1:]...)
			break
		}
	}
}

// boundSlot returns the slot bound at index (xa_load(&f->bindings, index)).
// The caller holds f.pc or the invalidate lock.
func (f *File) boundSlot(index uint64) Slot {
	i := sort.Search(len(f.bindings), func(i int) bool { return f.bindings[i].end > index })
	if i < len(f.bindings) && f.bindings[i].start <= index {
		return f.bindings[i].slot
	}
	return nil
}

// Close closes the fd. The file is released (kvm_gmem_release) when the last
// reference goes: the fd and every userspace mapping each hold one.
func (f *File) Close(t *sched.Thread) error {
	if err := f.fd.Close("guest_memfd"); err != nil {
		return err
	}
	f.put(t)
	return nil
}

func (f *File) put(t *sched.Thread) {
	f.refs--
	if f.refs == 0 {
		f.release(t)
	}
}

// release is kvm_gmem_release followed by the inode's eviction: under
// slots_lock and the exclusive invalidate lock, every bound slot forgets the
// file, everything the file mapped is zapped, the bindings go and the VM
// reference is dropped; then every folio is freed.
func (f *File) release(t *sched.Thread) {
	sl := f.owner.SlotsLock()
	if mutation.On(mutation.GmemReleaseLockInversion) {
		f.invalidate.Lock(t)
		sl.Lock(t)
	} else {
		sl.Lock(t)
		f.invalidate.Lock(t)
	}
	for _, b := range f.bindings {
		b.slot.ClearGmemFile()
	}
	begun := f.invalidateBegin(t, 0, ^uint64(0))
	f.zap(t, 0, ^uint64(0))
	f.invalidateEnd(t, begun)
	f.pc.Lock()
	f.bindings = nil
	f.released = true
	f.pc.Unlock()
	f.invalidate.Unlock(t)
	sl.Unlock(t)
	f.owner.PutRef(t)
	// Eviction (kvm_gmem_evict_inode): the pages go with the inode.
	f.invalidate.Lock(t)
	_ = f.truncate(t, 0, f.size>>pageShift, false)
	f.Reap(t)
	f.invalidate.Unlock(t)
	f.emit(t, "release", 0, f.size, 0)
}

// Describe names the file for messages.
func (f *File) String() string { return fmt.Sprintf("guest_memfd ino %d (%#x bytes)", f.ino, f.size) }
