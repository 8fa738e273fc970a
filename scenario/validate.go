package scenario

import (
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/inject"
	"github.com/tdxsim/tdxsim/kernel"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/tdxmodule"
)

// Limits the model enforces on scenario sizes.
const (
	MaxTDMemory    = 1 << 40 // 1 TiB per TD
	MaxHostMemory  = 4 << 40
	MaxImageBytes  = 256 << 20
	sharedBitGPA   = 1 << 47 // GPAW 48: the shared bit
	defaultUpfront = 512 << 20
)

var tdName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// bad builds an InputError for field, with the line where it was written
// (or the closest enclosing field that was).
func (f *File) bad(field, format string, args ...any) error {
	line := 0
	for p := field; p != ""; p = parent(p) {
		if l, ok := f.lines[p]; ok {
			line = l
			break
		}
	}
	return &InputError{File: f.Path, Line: line, Field: field, Rule: fmt.Sprintf(format, args...)}
}

func parent(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '.' || p[i] == '[' {
			return p[:i]
		}
	}
	return ""
}

// validate applies defaults and checks every rule a run relies on.
func (f *File) validate() error {
	s := &f.Scenario
	if s.Seed == nil {
		one := uint64(1)
		s.Seed = &one
	}
	if s.Host.Memory == 0 {
		s.Host.Memory = 64 << 30
	}
	if _, given := f.lines["host.packages"]; s.Host.Packages == 0 && !given {
		s.Host.Packages = 2
	}
	if err := f.validateHost(); err != nil {
		return err
	}
	if err := f.resolvePolicies(); err != nil {
		return err
	}
	if _, err := f.InjectConfig(); err != nil {
		return err
	}
	if err := f.validateSchedule(); err != nil {
		return err
	}
	if len(s.TDs) == 0 {
		return f.bad("tds", "at least one TD is required")
	}
	var total uint64
	f.images = make([][][]byte, len(s.TDs))
	f.firmware = make([]*tdFirmware, len(s.TDs))
	for i := range s.TDs {
		if err := f.validateTD(i); err != nil {
			return err
		}
		for _, m := range f.memslots(i) {
			total += uint64(m.Size)
		}
	}
	if total > uint64(s.Host.Memory)/2 {
		return f.bad("tds", "the TDs' memory (%s) must fit in half of host.memory (%s): the rest holds PAMT, page tables and the VMM",
			report.HumanBytes(total), report.HumanBytes(uint64(s.Host.Memory)))
	}
	if err := f.validateEnums(); err != nil {
		return err
	}
	tl := newTimelineCheck(f)
	for i := range s.Timeline {
		if err := tl.step(&s.Timeline[i], fmt.Sprintf("timeline[%d]", i), false); err != nil {
			return err
		}
	}
	return f.validateExpect()
}

func (f *File) validateHost() error {
	h := &f.Scenario.Host
	switch {
	case uint64(h.Memory)%(2<<20) != 0:
		return f.bad("host.memory", "%#x is not a multiple of 2M", uint64(h.Memory))
	case h.Memory > MaxHostMemory:
		return f.bad("host.memory", "%s is more than the model's 4T", report.HumanBytes(uint64(h.Memory)))
	case h.Packages < 1 || h.Packages > 64:
		return f.bad("host.packages", "%d: must be 1..64", h.Packages)
	case h.MaxPFN != 0 && h.MaxPFN < h.Memory:
		return f.bad("host.max_pfn", "%s is below host.memory (%s): RAM ends at max_pfn", report.HumanBytes(uint64(h.MaxPFN)), report.HumanBytes(uint64(h.Memory)))
	case uint64(h.MaxPFN) > 1<<kernel.MaxPhysAddrBits:
		return f.bad("host.max_pfn", "%#x is above 2^%d, the largest x86 physical address", uint64(h.MaxPFN), kernel.MaxPhysAddrBits)
	case uint64(h.MaxPFN)%addr.PageSize != 0:
		return f.bad("host.max_pfn", "%#x is not a multiple of 4K (it is a page frame number << 12)", uint64(h.MaxPFN))
	}
	if err := enum(f, "host.tdx.max_level", h.TDX.MaxLevel, "2M", "1G"); err != nil {
		return err
	}
	costs := report.CostTable{}
	for k, v := range h.TDX.Costs {
		if v == 0 {
			return f.bad("host.tdx.costs."+k, "a latency must be positive (ns)")
		}
		costs[k] = report.Cost{NS: v}
	}
	if err := costs.Validate(); err != nil {
		return f.bad("host.tdx.costs", "%v", err)
	}
	return nil
}

func enum(f *File, field, v string, allowed ...string) error {
	if v == "" {
		return nil
	}
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return f.bad(field, "%q: must be one of %v", v, allowed)
}

// populateAliases maps a retired spelling of policies.populate to today's.
// "decoupled" was the first name of map_private_pfn; it suggested the RFC
// "KVM: TDX: Decouple TDX init mem region from kvm_gmem_populate()" had been
// adopted, which it was not (docs/policies.md, populate).
var populateAliases = map[string]string{"decoupled": "map_private_pfn"}

func (f *File) validatePolicies() error {
	p := &f.Scenario.Policies
	if now, ok := populateAliases[p.Populate]; ok {
		p.Populate = now
	}
	for _, e := range []struct {
		field, v string
		allowed  []string
		def      *string
	}{
		{"policies.hugepages", p.HugePages, []string{"2M", "off", "1G"}, &p.HugePages},
		{"policies.max_order_from", p.MaxOrderFrom, []string{"gmem", "folio"}, &p.MaxOrderFrom},
		{"policies.split_order", p.SplitOrder, []string{"sept_first", "folio_first"}, &p.SplitOrder},
		{"policies.populate", p.Populate, []string{"map_private_pfn", "gmem_populate"}, &p.Populate},
		{"policies.external_spt_cache", p.ExternalSPTCache, []string{"kvm", "tdx_prealloc"}, &p.ExternalSPTCache},
		{"policies.teardown", p.Teardown, []string{"per_page", "terminate_vm"}, &p.Teardown},
	} {
		if err := enum(f, e.field, e.v, e.allowed...); err != nil {
			return err
		}
		if *e.def == "" { // the first allowed value is upstream's
			*e.def = e.allowed[0]
		}
	}
	if p.DynamicPAMT == nil {
		t := true
		p.DynamicPAMT = &t
	}
	if f.Host.TDX.MaxLevel == "" {
		f.Host.TDX.MaxLevel = "2M"
		if p.HugePages == "1G" {
			f.Host.TDX.MaxLevel = "1G"
		}
	}
	return nil
}

func (f *File) validateTD(i int) error {
	td := &f.Scenario.TDs[i]
	at := fmt.Sprintf("tds[%d]", i)
	if td.Name == "" {
		td.Name = fmt.Sprintf("td%d", i)
	}
	if !tdName.MatchString(td.Name) {
		return f.bad(at+".name", "%q: 1 to 32 letters, digits, _ or -", td.Name)
	}
	for j := range i {
		if f.Scenario.TDs[j].Name == td.Name {
			return f.bad(at+".name", "%q is already the name of tds[%d]", td.Name, j)
		}
	}
	if _, given := f.lines[at+".vcpus"]; td.VCPUs == 0 && !given {
		td.VCPUs = 1
	}
	if td.VCPUs < 1 || td.VCPUs > 256 {
		return f.bad(at+".vcpus", "%d: must be 1..256", td.VCPUs)
	}
	if err := enum(f, at+".conversion", td.Conversion, "kvm", "in_place"); err != nil {
		return err
	}
	if err := f.resolveConversion(i); err != nil {
		return err
	}
	if err := f.checkFirmwareAlone(i); err != nil {
		return err
	}
	if len(td.Memslots) > 0 {
		var sum uint64
		for k, m := range td.Memslots {
			ms := fmt.Sprintf("%s.memslots[%d]", at, k)
			switch {
			case m.Size == 0:
				return f.bad(ms+".size", "required, non-zero")
			case uint64(m.GPA)%addr.Size2M != 0:
				return f.bad(ms+".gpa", "%#x is not 2M aligned", uint64(m.GPA))
			case uint64(m.Size)%addr.Size2M != 0:
				return f.bad(ms+".size", "%#x is not a multiple of 2M", uint64(m.Size))
			case uint64(m.GPA)+uint64(m.Size) > sharedBitGPA || uint64(m.GPA)+uint64(m.Size) < uint64(m.GPA):
				return f.bad(ms, "[%#x, %#x) reaches the shared bit (GPA bit 47 with GPAW 48)", uint64(m.GPA), uint64(m.GPA)+uint64(m.Size))
			}
			for j := range k {
				o := td.Memslots[j]
				if m.GPA < o.GPA+o.Size && o.GPA < m.GPA+m.Size {
					return f.bad(ms, "[%#x, %#x) overlaps memslots[%d] [%#x, %#x)", uint64(m.GPA), uint64(m.GPA+m.Size), j, uint64(o.GPA), uint64(o.GPA+o.Size))
				}
			}
			sum += uint64(m.Size)
		}
		if td.Memory == 0 {
			td.Memory = Size(sum)
		} else if uint64(td.Memory) != sum {
			return f.bad(at+".memory", "%s, but the memslots add up to %s", report.HumanBytes(uint64(td.Memory)), report.HumanBytes(sum))
		}
	}
	switch {
	case td.Memory == 0:
		return f.bad(at+".memory", "required (or give memslots)")
	case uint64(td.Memory)%addr.Size2M != 0:
		return f.bad(at+".memory", "%#x is not a multiple of 2M", uint64(td.Memory))
	case td.Memory > MaxTDMemory:
		return f.bad(at+".memory", "%s is more than the model's 1T per TD", report.HumanBytes(uint64(td.Memory)))
	case uint64(td.Memory) >= sharedBitGPA:
		return f.bad(at+".memory", "reaches the shared bit")
	}
	if len(td.Memslots) == 0 && td.Firmware == "" {
		td.Memslots = []Memslot{{GPA: 0, Size: td.Memory}}
	}
	if uint64(td.GmemOffset)%addr.PageSize != 0 {
		return f.bad(at+".gmem_offset", "%#x is not 4K aligned", uint64(td.GmemOffset))
	}
	if hp := f.Scenario.Policies.HugePages; hp != "off" && uint64(td.GmemOffset)%addr.Size2M != 0 && td.Conversion == "kvm" && !td.KeepSharedBacking {
		return f.bad(at+".gmem_offset", "%#x is not a whole number of huge pages: guest_memfd (hugepages=%s) would refuse the VMM's punches on conversion; use conversion: in_place or keep_shared_backing: true", uint64(td.GmemOffset), hp)
	}
	if td.Firmware != "" {
		return f.validateFirmware(i)
	}
	return f.validateImage(i)
}

func (f *File) validateImage(i int) error {
	td := &f.Scenario.TDs[i]
	var total uint64
	type span struct{ lo, hi uint64 }
	var spans []span
	for k := range td.Image {
		r := &td.Image[k]
		at := fmt.Sprintf("tds[%d].image[%d]", i, k)
		if uint64(r.GPA)%addr.PageSize != 0 {
			return f.bad(at+".gpa", "%#x is not 4K aligned", uint64(r.GPA))
		}
		if r.Fill != nil && (*r.Fill < 0 || *r.Fill > 255) {
			return f.bad(at+".fill", "%d is not a byte (0..255)", *r.Fill)
		}
		var data []byte
		switch {
		case r.File != "":
			if r.Fill != nil {
				return f.bad(at+".fill", "goes with size, not file")
			}
			p := r.File
			if !filepath.IsAbs(p) {
				p = filepath.Join(f.dir, p)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return f.bad(at+".file", "%v", err)
			}
			if r.Size != 0 && uint64(r.Size) < uint64(len(b)) {
				b = b[:r.Size]
			}
			data = b
		case r.Size == 0:
			return f.bad(at, "needs size or file")
		default:
			if uint64(r.Size) > MaxImageBytes {
				return f.bad(at+".size", "more than the model's %d MiB image limit", MaxImageBytes>>20)
			}
			data = make([]byte, r.Size)
			for j := range data {
				if r.Fill != nil {
					data[j] = byte(*r.Fill)
				} else {
					data[j] = byte(j*7 + j>>12)
				}
			}
		}
		if len(data) == 0 {
			return f.bad(at+".file", "is empty")
		}
		n := (uint64(len(data)) + addr.PageSize - 1) &^ (addr.PageSize - 1)
		lo, hi := uint64(r.GPA), uint64(r.GPA)+n
		inSlot := false
		for _, m := range td.Memslots {
			if lo >= uint64(m.GPA) && hi <= uint64(m.GPA+m.Size) {
				inSlot = true
			}
		}
		if !inSlot {
			return f.bad(at, "[%#x, %#x) is not inside one memslot of %s", lo, hi, td.Name)
		}
		for j, s := range spans {
			if lo < s.hi && s.lo < hi {
				return f.bad(at, "overlaps image[%d]", j)
			}
		}
		spans = append(spans, span{lo, hi})
		if total += n; total > MaxImageBytes {
			return f.bad(at, "the image exceeds the model's %d MiB limit", MaxImageBytes>>20)
		}
		f.images[i] = append(f.images[i], data)
	}
	return nil
}

func (f *File) validateExpect() error {
	e := &f.Scenario.Expect
	for _, name := range sortedKeys(e.MRTD) {
		if f.td(name) < 0 {
			return f.bad("expect.mrtd."+name, "no TD is named %q", name)
		}
		if b, err := hex.DecodeString(e.MRTD[name]); err != nil || len(b) != 48 {
			return f.bad("expect.mrtd."+name, "want 96 hex digits (a SHA-384)")
		}
	}
	for _, k := range sortedKeys(e.Seamcalls) {
		b := e.Seamcalls[k]
		if k != "total" {
			if _, err := inject.ParseLeaf(strings.SplitN(k, "/", 2)[0]); err != nil {
				return f.bad("expect.seamcalls."+k, "not a SEAMCALL leaf name (TDH.MEM.PAGE.AUG) or total")
			}
		}
		if b.Min == nil && b.Max == nil {
			return f.bad("expect.seamcalls."+k, "give min, max or both")
		}
		if b.Min != nil && b.Max != nil && *b.Min > *b.Max {
			return f.bad("expect.seamcalls."+k, "min %d is above max %d", *b.Min, *b.Max)
		}
	}
	return nil
}

func (f *File) td(name string) int {
	for i, td := range f.Scenario.TDs {
		if td.Name == name {
			return i
		}
	}
	return -1
}

// timelineCheck follows the timeline to check each step against the state
// the steps before it leave: torn-down TDs, deleted memslots, booted TDs.
type timelineCheck struct {
	f        *File
	torn     map[int]string
	booted   map[int]string
	deleted  map[[2]int]string
	parallel map[int]string // TD -> the parallel group's guest step using it
	steps    int            // steps checked so far, parallel branches counted
}

func newTimelineCheck(f *File) *timelineCheck {
	return &timelineCheck{f: f, torn: map[int]string{}, booted: map[int]string{}, deleted: map[[2]int]string{}}
}

// resolve finds the TD a step names (the only TD when it names none).
func (c *timelineCheck) resolve(name, at string) (int, error) {
	f := c.f
	i := 0
	if name == "" {
		if len(f.Scenario.TDs) != 1 {
			return 0, f.bad(at+".td", "required: the scenario has %d TDs", len(f.Scenario.TDs))
		}
		name = f.Scenario.TDs[0].Name
	} else if i = f.td(name); i < 0 {
		return 0, f.bad(at+".td", "no TD is named %q", name)
	}
	if where, ok := c.torn[i]; ok {
		return 0, f.bad(at+".td", "%s was torn down at %s", name, where)
	}
	return i, nil
}

// ramBytes is a TD's memory in its live memslots (not a firmware's flash).
func (c *timelineCheck) ramBytes(i int) uint64 {
	var n uint64
	for k, m := range c.f.memslots(i) {
		if _, gone := c.deleted[[2]int{i, k}]; !gone && c.f.isRAMSlot(i, k) {
			n += uint64(m.Size)
		}
	}
	return n
}

func (c *timelineCheck) inLiveSlot(i int, gpa, size uint64) bool {
	for k, m := range c.f.memslots(i) {
		if _, gone := c.deleted[[2]int{i, k}]; !gone && gpa >= uint64(m.GPA) && gpa+size <= uint64(m.GPA+m.Size) && gpa+size > gpa {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// InjectConfig checks the inject section and returns the injector's
// configuration (its seed is the run's, set by the runner).
func (f *File) InjectConfig() (inject.Config, error) {
	in := f.Scenario.Inject
	var c inject.Config
	if in.Busy < 0 || in.Busy > 1 || in.Busy != in.Busy {
		return c, f.bad("inject.busy", "%v: want a probability from 0 to 1", in.Busy)
	}
	c.Busy = in.Busy
	for i, name := range in.BusyLeaves {
		l, err := inject.ParseLeaf(name)
		if err != nil {
			return c, f.bad(fmt.Sprintf("inject.busy_leaves[%d]", i), "%v", err)
		}
		if !inject.ContentionOf(l).Possible() {
			return c, f.bad(fmt.Sprintf("inject.busy_leaves[%d]", i),
				"%s: no contender can make the module return TDX_OPERAND_BUSY there (docs/faults.md); a fail entry injects it as a module bug", name)
		}
		c.BusyLeaves = append(c.BusyLeaves, l)
	}
	for i, lf := range in.Fail {
		field := fmt.Sprintf("inject.fail[%d]", i)
		l, err := inject.ParseLeaf(lf.Leaf)
		if err != nil {
			return c, f.bad(field+".leaf", "%v", err)
		}
		if lf.Nth == 0 {
			return c, f.bad(field+".nth", "required, counting from 1")
		}
		st := tdxmodule.OperandInvalid
		if lf.Status != "" {
			if st, err = inject.ParseStatus(lf.Status); err != nil {
				return c, f.bad(field+".status", "%v", err)
			}
			if st == tdxmodule.Success {
				return c, f.bad(field+".status", "a failure cannot return TDX_SUCCESS")
			}
		}
		c.Fail = append(c.Fail, inject.Failure{Leaf: l, Nth: lf.Nth, Every: lf.Every, Status: st})
	}
	for i, af := range in.AllocFail {
		if af.Nth == 0 {
			return c, f.bad(fmt.Sprintf("inject.alloc_fail[%d].nth", i), "required, counting from 1")
		}
		if af.Source != "" && !slices.Contains(inject.AllocSources, af.Source) {
			return c, f.bad(fmt.Sprintf("inject.alloc_fail[%d].source", i), "unknown allocation source %q; known: %s (or leave it out for any)",
				af.Source, strings.Join(inject.AllocSources, ", "))
		}
		c.AllocFail = append(c.AllocFail, inject.AllocFailure{Source: af.Source, Nth: af.Nth})
	}
	return c, nil
}

// SetInject adds one --inject setting after loading: busy=P,
// busy_leaves=L1,L2, fail=LEAF:N[:EVERY[:STATUS]], alloc=[SOURCE]:N.
func (f *File) SetInject(key, value string) error {
	in := &f.Scenario.Inject
	bad := func(rule string) error { return &InputError{File: "--inject", Field: key, Rule: rule} }
	switch key {
	case "busy":
		p, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return bad(fmt.Sprintf("%q: want a probability from 0 to 1", value))
		}
		in.Busy = p
	case "busy_leaves":
		in.BusyLeaves = append(in.BusyLeaves, strings.Split(value, ",")...)
	case "fail":
		parts := strings.Split(value, ":")
		if len(parts) < 2 || len(parts) > 4 {
			return bad(fmt.Sprintf("%q: want LEAF:N[:EVERY[:STATUS]]", value))
		}
		lf := LeafFailure{Leaf: parts[0]}
		var err error
		if lf.Nth, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
			return bad(fmt.Sprintf("%q: N is not a number", value))
		}
		if len(parts) > 2 {
			if lf.Every, err = strconv.ParseUint(parts[2], 10, 64); err != nil {
				return bad(fmt.Sprintf("%q: EVERY is not a number", value))
			}
		}
		if len(parts) > 3 {
			lf.Status = parts[3]
		}
		in.Fail = append(in.Fail, lf)
	case "alloc":
		src, n, ok := strings.Cut(value, ":")
		nth, err := strconv.ParseUint(n, 10, 64)
		if !ok || err != nil {
			return bad(fmt.Sprintf("%q: want [SOURCE]:N", value))
		}
		in.AllocFail = append(in.AllocFail, AllocFailure{Source: src, Nth: nth})
	default:
		return bad("unknown; known: busy, busy_leaves, fail, alloc")
	}
	if _, err := f.InjectConfig(); err != nil {
		var ie *InputError
		if errors.As(err, &ie) {
			ie.File = "--inject"
		}
		return err
	}
	return nil
}
