package scenario

import (
	"testing"

	"github.com/tdxsim/tdxsim/inject"
)

// Every name in inject.AllocSources is a source the model allocates from:
// an alloc failure naming it is injected in a small run (so the list that
// load checks against is not stale).
func TestAllocSourcesAreRegistered(t *testing.T) {
	const tds = `
tds:
  - {name: a, memory: 2G, vcpus: 2}
timeline:
  - boot: {td: a, accept: lazy, upfront: 8M}
  - convert: {td: a, count: 8, size: 16K}
`
	for _, src := range inject.AllocSources {
		t.Run(src, func(t *testing.T) {
			pages := "1G"
			if src == "hugetlb-2M" {
				pages = "2M"
			}
			f, err := Parse("src.yaml", []byte("inject: {alloc_fail: [{source: "+src+", nth: 1}]}\npolicies: {hugepages: "+pages+"}"+tds))
			if err != nil {
				t.Fatal(err)
			}
			r, _ := Run(f, Options{})
			if r == nil || r.Injected["allocation failed"] == 0 {
				t.Errorf("no allocation from %s failed", src)
			}
		})
	}
}
