package gmem

import (
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/sched"
)

// Content modes: the flags of KVM_SET_MEMORY_ATTRIBUTES2 on a guest_memfd
// in the in-place conversion series' RFC v5. 0 is
// KVM_SET_MEMORY_ATTRIBUTES2_MODE_UNSPECIFIED (the default: no guarantee
// about the contents). Series: "[PATCH RFC v5 22/53] KVM: guest_memfd:
// Apply content modes while setting memory attributes"
// (20260428-gmem-inplace-conversion-v5-22-d8608ccfca22@google.com). v6
// dropped them ("[PATCH v6 00/43] guest_memfd: In-place conversion
// support", 20260507-gmem-inplace-conversion-v6-0-91ab5a8b19a4@google.com),
// so a file whose Config has no ContentModes takes flags 0 only.
const (
	// ContentZero is KVM_SET_MEMORY_ATTRIBUTES2_ZERO: every entity allowed
	// to access the memory reads zeros after the conversion; only for
	// private-to-shared.
	ContentZero uint64 = 1 << 0
	// ContentPreserve is KVM_SET_MEMORY_ATTRIBUTES2_PRESERVE: contents are
	// kept with respect to the last written unencrypted value.
	ContentPreserve uint64 = 1 << 1
	// contentModes is every content-mode bit.
	contentModes = ContentZero | ContentPreserve
)

// ContentModesFunc is kvm_arch_gmem_supported_content_modes(kvm,
// to_private, false) for the file's VM: the modes a conversion in that
// direction may ask for now.
type ContentModesFunc func(toPrivate bool) uint64

// checkContentFlags is kvm_gmem_set_attributes()'s flag check, done before
// the range is looked at. Series: RFC v5 patch 22: a bit other than ZERO
// and PRESERVE, or both, is EINVAL; without content modes (before RFC v5,
// and from v6 on) any flag is EINVAL.
func (f *File) checkContentFlags(op string, flags uint64) error {
	switch {
	case flags != 0 && f.contentModes == nil:
		return errno.Newf(op, errno.EINVAL, "flags %#x must be 0 (this kernel's KVM_SET_MEMORY_ATTRIBUTES2 has no content modes)", flags)
	case flags&^contentModes != 0:
		return errno.Newf(op, errno.EINVAL, "flags %#x: only ZERO (%#x) and PRESERVE (%#x) are defined", flags, ContentZero, ContentPreserve)
	case flags == contentModes:
		return errno.Newf(op, errno.EINVAL, "flags %#x: ZERO and PRESERVE together", flags)
	}
	return nil
}

// contentSupported is kvm_gmem_content_mode_is_supported(): DEFAULT
// always; ZERO never to private ("KVM in general is untrusted and thus
// cannot guarantee the guest ... will read zeros"); otherwise what the
// arch supports for the direction.
func (f *File) contentSupported(flags uint64, toPrivate bool) bool {
	switch {
	case flags == 0:
		return true
	case flags == ContentZero && toPrivate:
		return false
	}
	return f.contentModes(toPrivate)&flags != 0
}

// applyContent is kvm_gmem_apply_content_mode() for [start, end), under
// the invalidate lock: ZERO clears every allocated page of the range
// (kvm_gmem_apply_content_mode_zero(): the range, not only the part that
// changed attributes, and only pages in the page cache); PRESERVE and
// DEFAULT leave the contents (what x86 does for TDX: "Do nothing to
// preserve content", and no unspecified handler). A hwpoisoned page stops
// the zeroing with EHWPOISON, which the kernel only WARNs about (the
// conversion still completes); the model emits a "content_mode_warn"
// event. Series: RFC v5 patches 21, 22 and 26 ("[PATCH RFC v5 26/53] KVM:
// x86: Support SNP and TDX applying content modes",
// 20260428-gmem-inplace-conversion-v5-26-d8608ccfca22@google.com). RFC
// v5's helper WARNs on large folios (guest_memfd had only 4 KiB ones);
// the model zeroes a HugeTLB folio's pages in the range all the same.
func (f *File) applyContent(t *sched.Thread, flags, start, end uint64) {
	if flags != ContentZero {
		return
	}
	var zeroed uint64
	f.pc.Lock()
	stop := false
	for _, k := range f.chunkKeys(start, end) {
		c := f.chunks.get(k)
		lo, hi := max(start, k<<9), min(end, (k+1)<<9)
		if c.order > 0 && lo == k<<9 && hi == (k+1)<<9 && c.poison.empty() && c.present == full {
			_ = f.mem.FillTag(t, c.base, 9, 0)
			zeroed += 512
			continue
		}
		for i := lo; i < hi; i++ {
			if !c.present.get(i & 511) {
				continue
			}
			if c.poison.get(i & 511) {
				stop = true
				break
			}
			_ = f.mem.SetTag(t, c.pfn(i&511), 0)
			zeroed++
		}
		if stop {
			break
		}
	}
	f.pc.Unlock()
	if stop {
		f.emit(t, "content_mode_warn", start<<pageShift, (end-start)<<pageShift, errno.EHWPOISON)
	}
	f.emit(t, "content_zero", start<<pageShift, zeroed<<pageShift, 0)
}

// Write stores data at off in the mapping a page at a time, as a VMM's
// memcpy into its mapping of a shared guest_memfd range does (the image
// it then converts to private with PRESERVE and populates in place).
// Errors as Store's.
func (m *Mapping) Write(t *sched.Thread, off uint64, data []byte) error {
	for len(data) > 0 {
		pfn, err := m.fault(t, off, true)
		if err != nil {
			return err
		}
		in := off & (PageSize - 1)
		n := min(uint64(len(data)), PageSize-in)
		page := make([]byte, PageSize)
		copy(page, m.f.mem.Bytes(pfn))
		copy(page[in:], data[:n])
		m.f.version++
		if err := m.f.mem.WriteBytes(t, pfn, page, hostmem.MakeTag(0, m.f.version)); err != nil {
			return err
		}
		off, data = off+n, data[n:]
	}
	return nil
}
