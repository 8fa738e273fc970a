package scenario

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/tdxsim/tdxsim/guest"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/sched"
	"github.com/tdxsim/tdxsim/tdvf"
	"github.com/tdxsim/tdxsim/vmm"
)

// tdFirmware is a TD booted from a TDVF image (TD.Firmware), read and
// checked at load time: the image, the RAM QEMU's q35 gives the TD's
// memory, and its memslots (that RAM, then the image's flash below 4 GiB).
type tdFirmware struct {
	fw    *tdvf.Firmware
	ram   []vmm.Slot
	slots []vmm.Slot
}

// validateFirmware reads TD i's firmware and lays out its memslots as
// QEMU does (vmm.QEMURAM, vmm.FirmwareSlots). A file that cannot be read
// or is not valid TDVF is an *InputError wrapping the tdvf or os error,
// with the offset of what is wrong.
func (f *File) validateFirmware(i int) error {
	td := &f.Scenario.TDs[i]
	field := fmt.Sprintf("tds[%d].firmware", i)
	p := td.Firmware
	if !filepath.IsAbs(p) {
		p = filepath.Join(f.dir, p)
	}
	fw, err := tdvf.Load(p)
	if err != nil {
		var fe *tdvf.FormatError
		if errors.As(err, &fe) {
			return f.badErr(field, err, "%s: %v", p, err)
		}
		return f.badErr(field, err, "%v", err) // an *os.PathError names the file
	}
	ram := vmm.QEMURAM(uint64(td.Memory))
	slots, err := vmm.FirmwareSlots(fw, ram)
	if err != nil {
		return f.badErr(field, err, "%s with memory %s: %v", p, report.HumanBytes(uint64(td.Memory)), err)
	}
	f.firmware[i] = &tdFirmware{fw: fw, ram: ram, slots: slots}
	return nil
}

// badErr is bad with the error behind the rule kept (errors.Is, As).
func (f *File) badErr(field string, err error, format string, args ...any) error {
	e := f.bad(field, format, args...)
	if ie, ok := e.(*InputError); ok {
		ie.Err = err
	}
	return e
}

// checkFirmwareAlone refuses what a firmware TD cannot also have: its
// image is the firmware and its memslots are QEMU's.
func (f *File) checkFirmwareAlone(i int) error {
	td := &f.Scenario.TDs[i]
	field := fmt.Sprintf("tds[%d].firmware", i)
	switch {
	case td.Firmware == "":
		return nil
	case len(td.Image) > 0:
		return f.bad(field, "goes without image: the firmware is the TD's whole image")
	case len(td.Memslots) > 0:
		return f.bad(field, "goes without memslots: a firmware TD's memslots are QEMU's (memory laid out as q35 does, then the image's flash below 4 GiB)")
	}
	return nil
}

// firmwareOf returns TD i's firmware, nil when it has none.
func (f *File) firmwareOf(i int) *tdFirmware {
	if i < len(f.firmware) {
		return f.firmware[i]
	}
	return nil
}

// memslots returns TD i's memslots: the file's (or the default one), or
// a firmware TD's RAM and flash.
func (f *File) memslots(i int) []Memslot {
	fw := f.firmwareOf(i)
	if fw == nil {
		return f.Scenario.TDs[i].Memslots
	}
	out := make([]Memslot, 0, len(fw.slots))
	for _, s := range fw.slots {
		out = append(out, Memslot{GPA: Size(s.GPA), Size: Size(s.Size)})
	}
	return out
}

// isRAMSlot reports whether memslot k of TD i is the guest's RAM: every
// memslot is, but a firmware TD's flash (after its RAM slots).
func (f *File) isRAMSlot(i, k int) bool {
	fw := f.firmwareOf(i)
	return fw == nil || k < len(fw.ram)
}

// loadFirmware puts a firmware TD's image into it as QEMU does
// (vmm.LoadFirmware) and returns the guest's RAM (QEMU's RAM entries, not
// the flash) and what in it was already added (the sections in RAM: the
// guest never accepts those again).
func (rn *runner) loadFirmware(t *sched.Thread, td *tdRun, fw *tdFirmware) (ram, reserved []guest.Range, err error) {
	loads, err := td.m.LoadFirmware(t, fw.fw, fw.ram)
	td.firmware = loads
	if err != nil {
		return nil, nil, err
	}
	for _, r := range fw.ram {
		ram = append(ram, guest.Range{GPA: r.GPA, Size: r.Size})
	}
	for _, l := range loads {
		if l.PagesAdded == 0 {
			continue
		}
		for _, r := range fw.ram {
			if l.GPA >= r.GPA && l.End() <= r.End() {
				reserved = append(reserved, guest.Range{GPA: l.GPA, Size: l.Size})
			}
		}
	}
	return ram, reserved, nil
}

// firmwareSections is what the build did with each section, for the report.
func firmwareSections(loads []vmm.SectionLoad) []report.FirmwareSection {
	var out []report.FirmwareSection
	for _, l := range loads {
		out = append(out, report.FirmwareSection{Index: l.Index, Type: l.Type.String(), GPA: l.GPA, Size: l.Size,
			DataOffset: l.DataOffset, RawDataSize: l.RawDataSize, Attributes: l.Attributes.String(),
			PagesAdded: l.PagesAdded, PagesMeasured: l.PagesMeasured})
	}
	return out
}
