// Package mrtdvec computes an MRTD by hand from the byte layout the TDX
// module's TDH.MEM.PAGE.ADD and TDH.MR.EXTEND extend MRTD with (a 128-byte
// "MEM.PAGE.ADD" + GPA block; "MR.EXTEND" + GPA, then the 256 bytes), independently of the module model, so tests
// can check the model's measurement against it.
package mrtdvec

import (
	"crypto/sha512"
	"encoding/binary"
)

// Region is an image region as the hand computation sees it.
type Region struct {
	GPA     uint64
	Data    []byte // rounded up to 4 KiB with zeros
	Measure bool
}

// Hand returns the MRTD: per 4 KiB page one 128-byte "MEM.PAGE.ADD" block
// (name zero-padded to 16 bytes, GPA little-endian), and for measured pages
// per 256-byte chunk a "MR.EXTEND" block followed by the chunk.
func Hand(regions []Region) []byte {
	h := sha512.New384()
	block := func(name string, gpa uint64) {
		var b [128]byte
		copy(b[:16], name)
		binary.LittleEndian.PutUint64(b[16:24], gpa)
		h.Write(b[:])
	}
	for _, r := range regions {
		pages := max((len(r.Data)+4095)/4096, 1)
		buf := make([]byte, pages*4096)
		copy(buf, r.Data)
		for p := 0; p < pages; p++ {
			gpa := r.GPA + uint64(p)*4096
			block("MEM.PAGE.ADD", gpa)
			if r.Measure {
				for off := 0; off < 4096; off += 256 {
					block("MR.EXTEND", gpa+uint64(off))
					h.Write(buf[p*4096+off : p*4096+off+256])
				}
			}
		}
	}
	return h.Sum(nil)
}
