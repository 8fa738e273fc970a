// Package mrtd computes the MRTD a TD built from a memory layout has: each
// 4 KiB page added with TDH.MEM.PAGE.ADD in the given order and, where
// asked, measured with TDH.MR.EXTEND in 256-byte chunks. The TD is built
// the way every TD of the model is, by a VMM (package vmm) through KVM's
// TDX code and the module model (KVM_TDX_INIT_MEM_REGION per region, then
// KVM_TDX_FINALIZE_VM), so it is the MRTD the module would produce, not a
// re-implementation of the hash.
package mrtd

import (
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/internal/yamlin"
	"github.com/tdxsim/tdxsim/kvm/mmu"
	"github.com/tdxsim/tdxsim/kvm/tdx"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/vmm"
)

// MaxGPA bounds region addresses: a 4-level EPT TD has GPAW 48, and the
// top half (bit 47) is the shared space.
const MaxGPA = 1 << 47

// MaxImageBytes bounds the total image (real bytes are kept for it).
const MaxImageBytes = 4 << 30

// Size is a byte count or address (decimal, 0x hex, or K/M/G-suffixed).
type Size = yamlin.Size

// Region is one entry of `regions:`.
type Region struct {
	GPA     *Size  `yaml:"gpa"`
	File    string `yaml:"file"`
	Size    *Size  `yaml:"size"`
	Fill    *int   `yaml:"fill"`
	Measure bool   `yaml:"measure"`
	line    int
}

// Layout is a layout file.
type Layout struct {
	Regions []Region `yaml:"regions"`
	dir     string
	path    string
}

// InputError is bad input: it names the file, line, field and rule.
type InputError = yamlin.InputError

// MaxFileBytes caps a layout file's size (the images it names are read
// separately).
const MaxFileBytes = 4 << 20

// Load reads and validates a layout file.
func Load(path string) (*Layout, error) { return yamlin.Load(path, MaxFileBytes, Parse) }

// Parse validates layout text; path names it in errors and anchors `file:`.
func Parse(path string, data []byte) (*Layout, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &InputError{File: path, Rule: "empty layout: want a `regions:` list"}
		}
		return nil, yamlError(path, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &InputError{File: path, Line: extra.Line, Rule: "more than one YAML document: a layout is one document"}
	}
	l, err := decodeLayout(path, &root)
	if err != nil {
		return nil, err
	}
	l.dir, l.path = filepath.Dir(path), path
	return &l, l.validate()
}

func yamlError(path string, err error) error { return yamlin.Error(path, "", err) }

func (l *Layout) validate() error {
	if len(l.Regions) == 0 {
		return &InputError{File: l.path, Field: "regions", Rule: "at least one region is required"}
	}
	type span struct{ lo, hi uint64 }
	var spans []span
	var total uint64
	for i := range l.Regions {
		r := &l.Regions[i]
		field := fmt.Sprintf("regions[%d]", i)
		bad := func(f, rule string) error {
			return &InputError{File: l.path, Line: r.line, Field: field + f, Rule: rule}
		}
		if r.GPA == nil {
			return bad(".gpa", "required")
		}
		if uint64(*r.GPA)%addr.PageSize != 0 {
			return bad(".gpa", fmt.Sprintf("0x%x is not 4 KiB aligned", uint64(*r.GPA)))
		}
		switch {
		case r.File != "" && r.Size != nil:
			return bad("", "give either file or size, not both")
		case r.File == "" && r.Size == nil:
			return bad("", "needs file or size")
		case r.File != "" && r.Fill != nil:
			return bad(".fill", "goes with size, not file")
		case r.Fill != nil && (*r.Fill < 0 || *r.Fill > 255):
			return bad(".fill", fmt.Sprintf("%d is not a byte value (0..255)", *r.Fill))
		}
		var n uint64
		if r.File != "" {
			st, err := os.Stat(l.resolve(r.File))
			if err != nil {
				return bad(".file", err.Error())
			}
			if !st.Mode().IsRegular() {
				return bad(".file", "not a regular file")
			}
			n = uint64(st.Size())
		} else {
			n = uint64(*r.Size)
			if n == 0 {
				return bad(".size", "must be positive")
			}
		}
		n = max(n, 1)
		pages := (n + addr.PageSize - 1) / addr.PageSize
		lo, hi := uint64(*r.GPA), uint64(*r.GPA)+pages*addr.PageSize
		if hi > MaxGPA || hi < lo {
			return bad("", fmt.Sprintf("[0x%x, 0x%x) goes beyond the private GPA space (0x%x)", lo, hi, uint64(MaxGPA)))
		}
		for j, s := range spans {
			if lo < s.hi && s.lo < hi {
				return bad("", fmt.Sprintf("overlaps regions[%d]", j))
			}
		}
		spans = append(spans, span{lo, hi})
		total += pages * addr.PageSize
		if total > MaxImageBytes {
			return bad("", fmt.Sprintf("the image exceeds %d GiB", MaxImageBytes>>30))
		}
	}
	return nil
}

func (l *Layout) resolve(f string) string {
	if filepath.IsAbs(f) {
		return f
	}
	return filepath.Join(l.dir, f)
}

// regions loads the region contents, each at least one page (an empty
// file is one zero page, as the layout's validation counts it).
func (l *Layout) regions() ([]vmm.Region, uint64, error) {
	var out []vmm.Region
	var total uint64
	for i, r := range l.Regions {
		var data []byte
		if r.File != "" {
			b, err := os.ReadFile(l.resolve(r.File))
			if err != nil {
				return nil, 0, &InputError{File: l.path, Line: r.line, Field: fmt.Sprintf("regions[%d].file", i), Rule: err.Error()}
			}
			data = b
		} else {
			data = make([]byte, *r.Size)
			if r.Fill != nil && *r.Fill != 0 {
				for k := range data {
					data[k] = byte(*r.Fill)
				}
			}
		}
		if len(data) == 0 {
			data = make([]byte, addr.PageSize)
		}
		out = append(out, vmm.Region{GPA: uint64(*r.GPA), Data: data, Measure: r.Measure})
		total += uint64(len(data)) + addr.PageSize
	}
	return out, total, nil
}

// memslots covers every region with 2 MiB aligned memslots (what vmm asks
// of a layout), merging those that touch, in GPA order.
func memslots(regions []vmm.Region) []vmm.Slot {
	var spans []vmm.Slot
	for _, r := range regions {
		lo := r.GPA &^ (addr.Size2M - 1)
		hi := (r.GPA + uint64(len(r.Data)) + addr.Size2M - 1) &^ (addr.Size2M - 1)
		spans = append(spans, vmm.Slot{GPA: lo, Size: hi - lo})
	}
	slices.SortFunc(spans, func(a, b vmm.Slot) int { return cmp.Compare(a.GPA, b.GPA) })
	var out []vmm.Slot
	for _, s := range spans {
		if n := len(out); n > 0 && s.GPA <= out[n-1].End() {
			out[n-1].Size = max(out[n-1].End(), s.End()) - out[n-1].GPA
			continue
		}
		out = append(out, s)
	}
	return out
}

// Compute builds a TD from the layout on a fresh model host, through a
// VMM, KVM and the TDX module, and returns its MRTD (48 bytes).
func Compute(l *Layout) ([]byte, error) {
	regions, total, err := l.regions()
	if err != nil {
		return nil, err
	}
	slots := memslots(regions)
	var mem uint64
	for _, s := range slots {
		mem += s.Size
	}
	cfg := vmm.Config{MemBytes: mem, Slots: slots, VCPUs: 1,
		TD: tdx.Config{MMU: mmu.Config{HugePages: mmu.HugePagesOff}}}
	// Host memory for the private pages, the VMM's staging copy of the
	// largest region and the control structures, in whole GiB.
	hostBytes := (total*2 + 256<<20 + addr.Size1G - 1) &^ (addr.Size1G - 1)
	host, err := vmm.NewHost(vmm.HostConfig{Bytes: hostBytes, TDs: []vmm.Config{cfg}}, nil)
	if err != nil {
		return nil, err
	}
	var digest []byte
	var buildErr error
	s := sched.New(sched.Deterministic, 0, nil)
	s.Go("vmm", func(t *sched.Thread) {
		m, err := vmm.Create(t, host, cfg)
		if err != nil {
			buildErr = err
			return
		}
		if err := m.LoadImage(t, regions); err != nil {
			buildErr = err
		} else {
			digest, buildErr = m.Finalize(t)
		}
		buildErr = errors.Join(buildErr, m.Teardown(t))
	})
	if err := s.Run(); err != nil {
		return nil, err
	}
	if buildErr != nil {
		return nil, buildErr
	}
	return digest, nil
}

// Hex prints a digest as 96 lowercase hex characters.
func Hex(d []byte) string { return hex.EncodeToString(d) }
