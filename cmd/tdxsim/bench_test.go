package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// tdxsim bench --quick --json (one round) prints the machine and every
// figure with the keys it always had and the round summaries.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("a quick bench run takes a few seconds")
	}
	code, out, errs := run("bench", "--quick", "--json", "--rounds", "1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var rep struct {
		Machine struct {
			CPU        string `json:"cpu"`
			Cores      int    `json:"cores"`
			GOMAXPROCS int    `json:"gomaxprocs"`
			Go         string `json:"go"`
		} `json:"machine"`
		Cores   int `json:"cores"`
		Rounds  int `json:"rounds"`
		Results []struct {
			Name         string   `json:"name"`
			OpsPerSec    *float64 `json:"ops_per_sec"`
			BytesPerPage *float64 `json:"bytes_per_page"`
			Median       *float64 `json:"median"`
			Rounds       int      `json:"rounds"`
			VsRealKVM    *float64 `json:"vs_real_kvm"`
			VsOneVCPU    *float64 `json:"vs_one_vcpu"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, r := range rep.Results {
		if r.OpsPerSec == nil || r.BytesPerPage == nil {
			t.Errorf("%s lacks ops_per_sec or bytes_per_page", r.Name)
		}
		if r.Name != "real_kvm_fault_4k" && (r.Median == nil || r.Rounds != 1) {
			t.Errorf("%s: median %v over %d rounds", r.Name, r.Median, r.Rounds)
		}
		if r.Name == "fault_4k_2vcpus" && r.VsOneVCPU == nil {
			t.Errorf("fault_4k_2vcpus without vs_one_vcpu")
		}
		names[r.Name] = true
	}
	for _, n := range []string{"fault_4k", "fault_2m", "convert_4k_in_2m", "build_64m", "teardown_per_gib", "sched_switch", "fault_4k_2vcpus", "checks_overhead", "real_kvm_fault_4k"} {
		if !names[n] {
			t.Errorf("no %s in %s", n, out)
		}
	}
	if rep.Cores < 1 || rep.Machine.Cores != rep.Cores || rep.Machine.GOMAXPROCS < 1 || rep.Machine.Go == "" || rep.Machine.CPU == "" || rep.Rounds != 1 {
		t.Errorf("header: cores %d, machine %+v, rounds %d", rep.Cores, rep.Machine, rep.Rounds)
	}
}

// --rounds must be at least one.
func TestBenchRoundsFlag(t *testing.T) {
	for _, args := range [][]string{{"bench", "--rounds", "0"}, {"bench", "--rounds=-3"}, {"bench", "--rounds", "x"}} {
		code, _, errs := run(args...)
		if code != exitBadInput || !strings.Contains(errs, "rounds") {
			t.Errorf("%v: exit %d: %s", args, code, errs)
		}
	}
}
