package scenario

import "testing"

// host.tdx.enhanced_demote_interruptibility: false is a module without
// TDX_FEATURES0 ENHANCED_DEMOTE_INTERRUPTIBILITY; the huge-page v3 series
// then keeps every private mapping at 4K (Series: "[PATCH v3 24/24] KVM:
// TDX: Turn on PG_LEVEL_2M", tdx_gmem_private_max_mapping_level(), thread
// 20260106101646.24809-1-yan.y.zhao@intel.com), so no DEMOTE either.
func TestEnhancedDemoteGatesHugePages(t *testing.T) {
	const body = "tds: [{memory: 64M, vcpus: 2}]\ntimeline:\n  - boot: {accept: lazy}\n  - touch: {}\n"
	for _, c := range []struct {
		host string
		huge bool
	}{{"", true}, {"host: {tdx: {enhanced_demote_interruptibility: true}}\n", true}, {"host: {tdx: {enhanced_demote_interruptibility: false}}\n", false}} {
		r := mustRun(t, "s.yaml", c.host+body)
		if got := r.MappingsPeak["2M"] > 0; got != c.huge {
			t.Errorf("%q: 2M mappings at peak %d, want some: %v", c.host, r.MappingsPeak["2M"], c.huge)
		}
		if !c.huge && (r.Seamcalls["TDH.MEM.PAGE.DEMOTE"] != 0 || r.Guest.Accepts["2M"] != 0) {
			t.Errorf("4K-only run: %d DEMOTEs, %d 2M accepts", r.Seamcalls["TDH.MEM.PAGE.DEMOTE"], r.Guest.Accepts["2M"])
		}
	}
}
