package fuzz

import (
	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/scenario"
)

// acceptRange is firmware's explicit accept (scenario.Accept): a page-
// aligned range of the first memslot, 4K to 4M, at 4K or 2M, on the BSP
// or on all vCPUs.
func (g *gen) acceptRange(td *scenario.TD) scenario.Op {
	gpa := g.page(td)
	size := min(uint64(4096)<<g.r.IntN(11), slot0(td)-gpa)
	a := &scenario.Accept{Workload: workload(td), GPA: scenario.Size(gpa), Size: scenario.Size(size), Level: "2M", VCPUs: "bsp"}
	if g.chance(0.5) {
		a.Level = "4K"
	}
	if g.chance(0.3) {
		a.VCPUs, a.Chunk = "all", scenario.Size(2*addr.MiB)
	}
	return a
}

// bounce is a DMA bounce buffer (scenario.Bounce): one to four pages of
// the first memslot converted to shared and back 1 to 32 times.
func (g *gen) bounce(td *scenario.TD) scenario.Op {
	gpa := g.page(td)
	size := min(uint64(4096)*uint64(1+g.r.IntN(4)), slot0(td)-gpa)
	return &scenario.Bounce{Workload: workload(td), GPA: scenario.Size(gpa), Size: scenario.Size(size), Times: 1 + g.r.IntN(32)}
}
