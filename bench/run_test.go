package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fake is a measurer that returns the given rates round after round and
// records the order it was asked in.
type fake struct {
	calls []string
}

func (f *fake) figure(name string, real bool, rates ...float64) Figure {
	round := 0
	return Figure{Name: name, Real: real, Measure: func() (Result, error) {
		f.calls = append(f.calls, name)
		r := rates[round%len(rates)]
		round++
		if r < 0 {
			return Result{}, fmt.Errorf("fake: %w", ErrNoKVM)
		}
		return Result{Name: name, OpsPerSec: r, Ops: int64(round), ElapsedNS: 1, perPage: true, BytesPerPage: r / 1000}, nil
	}}
}

func runFake(t *testing.T, rounds int, figs ...Figure) *Report {
	t.Helper()
	rep, err := Run(Config{Rounds: rounds, Figures: figs})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// Every figure is measured once per round, so model and real rounds
// alternate; the rate is the median, min and max the extremes, and the
// other fields those of the median round.
func TestRunInterleavesAndSummarizes(t *testing.T) {
	f := &fake{}
	rep := runFake(t, 5,
		f.figure("fault_4k", false, 100, 500, 300, 200, 400),
		f.figure("real_kvm_fault_4k", true, 60, 20, 40, 50, 30),
		f.figure("fault_4k_2vcpus", false, 450, 600, 540, 500, 700))
	want := strings.Repeat("fault_4k real_kvm_fault_4k fault_4k_2vcpus ", 5)
	if got := strings.Join(f.calls, " ") + " "; got != want {
		t.Errorf("measured in order\n%s\nwant\n%s", got, want)
	}
	if rep.Rounds != 5 || rep.Spread == "" || rep.Cores < 1 || rep.Machine.Cores != rep.Cores || rep.Machine.Go == "" {
		t.Errorf("report header %+v", rep)
	}
	m, _ := rep.Result("fault_4k")
	if *m.Median != 300 || m.OpsPerSec != 300 || *m.Min != 100 || *m.Max != 500 || m.Rounds != 5 {
		t.Errorf("fault_4k: median %v ops/s %v min %v max %v rounds %d", *m.Median, m.OpsPerSec, *m.Min, *m.Max, m.Rounds)
	}
	if m.Ops != 3 || m.BytesPerPage != 0.3 { // the third round's
		t.Errorf("fault_4k takes ops %d, bytes/page %v: not the median round's", m.Ops, m.BytesPerPage)
	}
	if fmt.Sprint(m.PerRound) != "[100 500 300 200 400]" {
		t.Errorf("per round %v", m.PerRound)
	}
	if m.VsRealKVM == nil || *m.VsRealKVM != 300.0/40 || m.Real != "" {
		t.Errorf("vs_real_kvm %v (real %q), want %v", m.VsRealKVM, m.Real, 300.0/40)
	}
	two, _ := rep.Result("fault_4k_2vcpus")
	if two.VsOneVCPU == nil || *two.VsOneVCPU != 540.0/300 {
		t.Errorf("vs_one_vcpu %v, want %v", two.VsOneVCPU, 540.0/300)
	}
	if two.VsRealKVM != nil || m.VsOneVCPU != nil {
		t.Errorf("a ratio on the wrong figure: %+v %+v", m, two)
	}
}

// With an even number of rounds the median is the mean of the middle two.
func TestRunEvenRounds(t *testing.T) {
	f := &fake{}
	rep := runFake(t, 4, f.figure("fault_4k", false, 100, 400, 200, 300))
	m, _ := rep.Result("fault_4k")
	if *m.Median != 250 || *m.Min != 100 || *m.Max != 400 {
		t.Errorf("median %v min %v max %v", *m.Median, *m.Min, *m.Max)
	}
	if m.Ops != 3 { // the lower middle round (200/s) is the one described
		t.Errorf("ops %d", m.Ops)
	}
}

// Without /dev/kvm the real figure is null with its reason, fault_4k says
// why it has no ratio, and the JSON has no vs_real_kvm at all (never a 0);
// the real figure is not retried every round.
func TestRunWithoutKVM(t *testing.T) {
	f := &fake{}
	rep := runFake(t, 3,
		f.figure("fault_4k", false, 100),
		f.figure("real_kvm_fault_4k", true, -1),
		f.figure("fault_4k_2vcpus", false, 150))
	if n := strings.Count(strings.Join(f.calls, " "), "real_kvm"); n != 1 {
		t.Errorf("real figure tried %d times", n)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, r := range doc.Results {
		switch r["name"] {
		case "fault_4k":
			if _, ok := r["vs_real_kvm"]; ok {
				t.Errorf("vs_real_kvm present without /dev/kvm: %s", b)
			}
			if s, _ := r["real"].(string); !strings.Contains(s, "no /dev/kvm") {
				t.Errorf("fault_4k real note %q", s)
			}
		case "real_kvm_fault_4k":
			if v, ok := r["median"]; !ok || v != nil {
				t.Errorf("real median %v (present %v), want null", v, ok)
			}
			if s, _ := r["note"].(string); !strings.Contains(s, "no /dev/kvm") {
				t.Errorf("real note %q", s)
			}
		case "fault_4k_2vcpus":
			if r["vs_one_vcpu"] != 1.5 {
				t.Errorf("vs_one_vcpu %v", r["vs_one_vcpu"])
			}
		}
	}
	var text strings.Builder
	rep.WriteText(&text)
	if !strings.Contains(text.String(), "vs_real_kvm: none") {
		t.Errorf("text does not say why there is no ratio:\n%s", text.String())
	}
}

// A model figure that fails stops the run with its name and round.
func TestRunModelFailure(t *testing.T) {
	boom := errors.New("boom")
	_, err := Run(Config{Rounds: 2, Figures: []Figure{{Name: "fault_4k", Measure: func() (Result, error) { return Result{}, boom }}}})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "fault_4k (round 1)") {
		t.Errorf("err %v", err)
	}
}

// The JSON keeps every key it had and adds the summary ones; the text
// shows human units, slow figures as time per operation.
func TestReportShape(t *testing.T) {
	f := &fake{}
	rep := runFake(t, 3,
		f.figure("fault_4k", false, 377_000, 375_000, 380_000),
		f.figure("real_kvm_fault_4k", true, 90_000, 100_000, 110_000),
		f.figure("build_64m", false, 0.8, 0.9, 0.85))
	b, _ := json.Marshal(rep)
	var doc map[string]any
	json.Unmarshal(b, &doc)
	for _, k := range []string{"machine", "cores", "rounds", "spread", "results"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("no %q in %s", k, b)
		}
	}
	mach := doc["machine"].(map[string]any)
	for _, k := range []string{"cpu", "cores", "gomaxprocs", "go"} {
		if _, ok := mach[k]; !ok {
			t.Errorf("no machine %q in %s", k, b)
		}
	}
	for _, r := range doc["results"].([]any) {
		r := r.(map[string]any)
		for _, k := range []string{"name", "ops_per_sec", "bytes_per_page", "allocs_per_op", "ops", "elapsed_ns", "unit", "median", "min", "max", "rounds"} {
			if _, ok := r[k]; !ok {
				t.Errorf("%v: no %q", r["name"], k)
			}
		}
	}
	var text strings.Builder
	rep.WriteText(&text)
	for _, want := range []string{"377.0 k/s", "375.0..380.0 k/s", "100.0 k/s", "1.18 s/op", "1.11..1.25 s/op", "allocs/op", "vs_real_kvm: 3.77x", "GOMAXPROCS"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
}

func TestHumanRate(t *testing.T) {
	for _, c := range []struct {
		rate float64
		want string
	}{{0, "-"}, {0.5, "2.00 s/op"}, {1.0 / 1.18, "1.18 s/op"}, {4, "250 ms/op"}, {42, "42 /s"}, {12_194, "12.2 k/s"},
		{1_649_794, "1.65 M/s"}, {3.2e9, "3.20 G/s"}} {
		if got := HumanRate(c.rate); got != c.want {
			t.Errorf("HumanRate(%v) = %q, want %q", c.rate, got, c.want)
		}
	}
}

func TestCPUModel(t *testing.T) {
	x86 := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n"
	if got := cpuModel(strings.NewReader(x86)); got != "AMD EPYC 7B13" {
		t.Errorf("x86: %q", got)
	}
	arm := "processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n"
	if got := cpuModel(strings.NewReader(arm)); got != "CPU part 0xd0c" {
		t.Errorf("arm64: %q", got)
	}
}
