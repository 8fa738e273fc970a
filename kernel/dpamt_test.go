package kernel_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/kernel"
	"github.com/tdxsim/tdxsim/scenario"
)

// The arithmetic of "[PATCH v6 04/11] x86/virt/tdx: Allocate ref counts for
// Dynamic PAMT memory": DIV_ROUND_UP(max_pfn, PTRS_PER_PTE) *
// sizeof(atomic_t), "2 MB for every 1 TB", 8 GB for the 52-bit space.
func TestRefcountArrayBytes(t *testing.T) {
	const G, T = uint64(1) << 30, uint64(1) << 40
	for _, c := range []struct {
		layout    kernel.RefcountArray
		ram, maxp uint64
		want      uint64
	}{
		{kernel.RefcountMaxPFN, 256 * G, 1 << 52, 8 * G},     // the cover letter's "max_pfn at maxpa" row
		{kernel.RefcountMaxPFN, 256 * G, 1 << 48, 512 << 20}, // the largest max_pfn v6's 48-bit gate allows
		{kernel.RefcountMaxPFN, T, T, 2 << 20},               // 2 MiB per TiB
		{kernel.RefcountMaxPFN, 256 * G, 256 * G, 512 << 10}, // max_pfn at 256 GB
		{kernel.RefcountMaxPFN, 2 << 20, 2 << 20, 4096},      // one refcount, one vmalloc page
		{kernel.RefcountSparse, 256 * G, 1 << 52, 512 << 10}, // v4: only over RAM
		{kernel.RefcountNone, 256 * G, 1 << 52, 0},           // static PAMT
		{kernel.RefcountMaxPFN, 64 * G, 0, 128 << 10},        // max_pfn below RAM: RAM's end
	} {
		if got := kernel.RefcountArrayBytes(c.layout, c.ram, c.maxp); got != c.want {
			t.Errorf("%s ram %#x max_pfn %#x: %d bytes, want %d", c.layout, c.ram, c.maxp, got, c.want)
		}
	}
}

func TestDPAMTv6Profile(t *testing.T) {
	p, err := kernel.Lookup("dpamt-v6")
	if err != nil {
		t.Fatal(err)
	}
	if p.Refcounts != kernel.RefcountMaxPFN || p.PAMTCachePages != 10 || p.DPAMTMaxPhysBits != 48 {
		t.Errorf("refcounts %s, cache %d, phys bits %d; want max_pfn, 10 (PT64_ROOT_MAX_LEVEL * TDX_DPAMT_ENTRY_PAGE_CNT), 48", p.Refcounts, p.PAMTCachePages, p.DPAMTMaxPhysBits)
	}
	v4, _ := kernel.Lookup(kernel.Default)
	if v4.Refcounts != kernel.RefcountSparse || v4.PAMTCachePages != 0 {
		t.Errorf("default profile: refcounts %s cache %d, want sparse and the model's cache", v4.Refcounts, v4.PAMTCachePages)
	}
}

// v6 patch 10: Dynamic PAMT needs x86_phys_bits <= 48, so RAM ending above
// 2^48 with dynamic_pamt: true is bad input naming host.max_pfn and the
// kernel; dynamic_pamt: false, or the v4 profile, take it.
func TestMaxPFNAboveDPAMTGate(t *testing.T) {
	const file = "kernel: dpamt-v6\nhost: {memory: 4G, max_pfn: 0x1000000200000}\ntds: [{memory: 256M}]\n"
	_, err := scenario.Parse("s.yaml", []byte(file))
	var ie *scenario.InputError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "s.yaml:2: host.max_pfn") || !strings.Contains(err.Error(), "dpamt-v6") || !strings.Contains(err.Error(), "x86_phys_bits > 48") {
		t.Fatalf("got %v, want an InputError at s.yaml:2 host.max_pfn naming dpamt-v6 and the 48-bit gate", err)
	}
	if _, err := scenario.Parse("s.yaml", []byte(strings.Replace(file, "tds:", "policies: {dynamic_pamt: false}\ntds:", 1))); err != nil {
		t.Errorf("dynamic_pamt: false: %v", err)
	}
	if _, err := scenario.Parse("s.yaml", []byte(strings.Replace(file, "dpamt-v6", kernel.Default, 1))); err != nil {
		t.Errorf("under %s (no 48-bit gate in v4): %v", kernel.Default, err)
	}
	for _, bad := range []string{"max_pfn: 2G", "max_pfn: 0x10000000001000", "max_pfn: 0x100001001"} {
		f := strings.Replace(file, "max_pfn: 0x1000000200000", bad, 1)
		if _, err := scenario.Parse("s.yaml", []byte(f)); !errors.As(err, &ie) || ie.Field != "host.max_pfn" {
			t.Errorf("%s: got %v, want a host.max_pfn InputError", bad, err)
		}
	}
}

// The memory report carries the refcount array as the profile sizes it.
func TestRefcountReport(t *testing.T) {
	const file = "host: {memory: 4G, max_pfn: 0x1000000000000}\ntds: [{memory: 256M}]\n"
	for _, c := range []struct {
		kernel string
		want   uint64
		layout string
	}{
		{"dpamt-v6", 512 << 20, "max_pfn"},
		{kernel.Default, 8 << 10, "sparse"},
		{"6.19", 0, "none"},
	} {
		f, err := scenario.Parse("s.yaml", []byte(file))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.SetKernel(c.kernel); err != nil {
			t.Fatal(err)
		}
		r, err := scenario.Run(f, scenario.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if m := r.Memory; m.PAMTRefcountBytes != c.want || m.RefcountArray != c.layout || m.MaxPFNBytes != 1<<48 {
			t.Errorf("%s: refcounts %d bytes (%s, max_pfn %#x), want %d (%s)", c.kernel, m.PAMTRefcountBytes, m.RefcountArray, m.MaxPFNBytes, c.want, c.layout)
		}
	}
}
