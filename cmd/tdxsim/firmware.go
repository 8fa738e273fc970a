package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"text/tabwriter"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/report"
	"github.com/tdxsim/tdxsim/tdvf"
	"github.com/tdxsim/tdxsim/vmm"
)

// firmwareMRTD is `tdxsim mrtd --firmware`: parse the TDVF image, build a
// TD from it through the model's stack (vmm.FirmwareMRTD) and print the
// MRTD, and the section table when asked. vmmName picks whose build to
// follow (vmm.FirmwareVMMs).
func firmwareMRTD(path, memory, vmmName string, table, asJSON bool, stdout, stderr io.Writer) int {
	mem, err := addr.ParseSize(memory)
	if err != nil {
		fmt.Fprintf(stderr, "tdxsim mrtd: --memory %q: %v\n", memory, err)
		return exitBadInput
	}
	vmmKind, ok := vmm.FirmwareVMMs[vmmName]
	if !ok {
		fmt.Fprintf(stderr, "tdxsim mrtd: --vmm %q: want qemu, cloud-hypervisor or tdvf-spec\n", vmmName)
		return exitBadInput
	}
	fw, err := tdvf.Load(path)
	if err != nil {
		var fe *tdvf.FormatError
		var pe *fs.PathError
		if errors.As(err, &fe) || errors.As(err, &pe) {
			fmt.Fprintf(stderr, "tdxsim mrtd: %s: %v\n", path, err)
			return exitBadInput
		}
		fmt.Fprintf(stderr, "tdxsim mrtd: %s: %v\n", path, err)
		return exitCheck
	}
	res, err := vmm.FirmwareMRTD(fw, vmm.FirmwareOptions{MemBytes: mem, VMM: vmmKind})
	if err != nil {
		if errors.Is(err, vmm.ErrFirmwareLayout) {
			fmt.Fprintf(stderr, "tdxsim mrtd: %s: %v\n", path, err)
			return exitBadInput
		}
		fmt.Fprintf(stderr, "tdxsim mrtd: building the TD: %v\n", err)
		return exitCheck
	}
	var rows []report.FirmwareSection
	for _, l := range res.Sections {
		rows = append(rows, report.FirmwareSection{Index: l.Index, Type: l.Type.String(), GPA: l.GPA, Size: l.Size, DataOffset: l.DataOffset,
			RawDataSize: l.RawDataSize, Attributes: l.Attributes.String(), PagesAdded: l.PagesAdded, PagesMeasured: l.PagesMeasured})
	}
	digest := hex.EncodeToString(res.MRTD)
	if asJSON {
		b, err := json.MarshalIndent(struct {
			MRTD     string                   `json:"mrtd"`
			Sections []report.FirmwareSection `json:"sections"`
		}{digest, rows}, "", "  ")
		if err != nil {
			fmt.Fprintf(stderr, "tdxsim mrtd: %v\n", err)
			return exitCheck
		}
		fmt.Fprintf(stdout, "%s\n", b)
		return exitOK
	}
	if table {
		w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "#\ttype\tGPA\tsize\tfile offset\traw size\tattributes\tpages added\tpages measured")
		for _, r := range rows {
			fmt.Fprintf(w, "%d\t%s\t%#x\t%#x\t%#x\t%#x\t%s\t%d\t%d\n", r.Index, r.Type, r.GPA, r.Size, r.DataOffset, r.RawDataSize,
				r.Attributes, r.PagesAdded, r.PagesMeasured)
		}
		w.Flush()
		fmt.Fprintf(stdout, "MRTD %s\n", digest)
		return exitOK
	}
	fmt.Fprintln(stdout, digest)
	return exitOK
}
