package vmm

import (
	"testing"

	"github.com/tdxsim/tdxsim/event"
)

func TestSmoke(t *testing.T) {
	c := event.NewCounter()
	res, err := Lifecycle(LifecycleOptions{HostBytes: 4 << 30, DynamicPAMT: true, Packages: 2, MemBytes: 128 << 20, VCPUs: 2,
		ImageBytes: 2 << 20, AcceptBytes: 64 << 20, ConvertBytes: 8 << 20, PunchBytes: 4 << 20, Seed: 1}, c)
	t.Logf("res %+v err %v", res, err)
	t.Logf("calls %v", c.Calls())
	for _, v := range c.Violations() {
		t.Logf("violation %s: %s", v.Name, v.Detail)
	}
}
