package vmm

import (
	"fmt"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/gmem"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
)

// loadInPlace is LoadImage for Config.PopulateInPlace, the TD set-up flow
// of the in-place conversion series' RFC v5 ("[PATCH RFC v5 26/53] KVM:
// x86: Support SNP and TDX applying content modes",
// 20260428-gmem-inplace-conversion-v5-26-d8608ccfca22@google.com): 1. the
// range of guest_memfd goes shared; 2. the VMM writes the image directly
// into it; 3. it converts the range to private with
// KVM_SET_MEMORY_ATTRIBUTES2_PRESERVE, which a TD takes only before
// KVM_TDX_FINALIZE_VM; 4. KVM_TDX_INIT_MEM_REGION with source_addr 0 adds
// each page from itself ("[PATCH RFC v5 25/53] KVM: TDX: Make source page
// optional for KVM_TDX_INIT_MEM_REGION"). A HugeTLB file's huge pages are
// allocated first (fallocate), so the conversion to shared splits them
// and the host can map the 4 KiB pieces; going private merges them back.
func (m *VMM) loadInPlace(t *sched.Thread, regions []Region) error {
	for _, r := range regions {
		n := (uint64(len(r.Data)) + addr.PageSize - 1) / addr.PageSize
		if n == 0 {
			continue
		}
		err := m.pieces("populate_in_place", r.GPA, n*addr.PageSize, func(s *slot, gpa, size uint64) error {
			off := s.gmemOff + gpa - s.GPA
			unit := uint64(addr.PageSize) << m.Gmem.PageOrder()
			lo, hi := off&^(unit-1), (off+size+unit-1)&^(unit-1)
			if err := m.Gmem.Fallocate(t, gmem.FallocKeepSize, int64(lo), int64(min(hi, m.Gmem.Size())-lo)); err != nil {
				return err
			}
			if _, err := m.Gmem.SetAttributes(t, off, size, 0, 0); err != nil {
				return err
			}
			mp, err := m.Gmem.Mmap(t, off, size, gmem.ProtRead|gmem.ProtWrite, true)
			if err != nil {
				return err
			}
			var data []byte
			if from := gpa - r.GPA; from < uint64(len(r.Data)) {
				data = r.Data[from:min(uint64(len(r.Data)), from+size)]
			}
			err = mp.Write(t, 0, data)
			mp.Munmap(t)
			if err != nil {
				return err
			}
			_, err = m.Gmem.SetAttributes(t, off, size, gmem.AttrPrivate, gmem.ContentPreserve)
			return err
		})
		if err != nil {
			return fmt.Errorf("writing the image at %#x into guest_memfd: %w", r.GPA, err)
		}
		mr := tdx.MemRegion{GPA: r.GPA, NPages: n, Measure: r.Measure}
		if err := m.TD.InitMemRegion(t, m.VCPUs[0], &mr); err != nil {
			return fmt.Errorf("KVM_TDX_INIT_MEM_REGION at %#x (%d pages left, no source): %w", mr.GPA, mr.NPages, err)
		}
	}
	return nil
}
