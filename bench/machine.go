package bench

import (
	"bufio"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/tdxsim/tdxsim/kvmhost"
)

// Machine says where the figures were measured: a rate means little
// without the CPU and the cores it ran on.
type Machine struct {
	CPU        string `json:"cpu"`
	Cores      int    `json:"cores"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Go         string `json:"go"`
	Platform   string `json:"platform"`
	// Kernel is the running kernel's release (the real-KVM figure is
	// that kernel's guest_memfd).
	Kernel string `json:"kernel,omitempty"`
	// KVM is "/dev/kvm" when it can be opened, else why not.
	KVM string `json:"kvm"`
}

// ThisMachine describes the machine this process runs on.
func ThisMachine() Machine {
	m := Machine{
		CPU:        "unknown",
		Cores:      runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		Go:         runtime.Version(),
		Platform:   runtime.GOOS + "/" + runtime.GOARCH,
		KVM:        "/dev/kvm",
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		if cpu := cpuModel(f); cpu != "" {
			m.CPU = cpu
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if err := kvmhost.Available(); err != nil {
		m.KVM = "no /dev/kvm: " + err.Error()
	}
	return m
}

// cpuModel is the first "model name" in a /proc/cpuinfo (x86), else its
// first "Hardware" or "CPU part" line (arm64 kernels name no model).
func cpuModel(r io.Reader) string {
	var fallback string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "model name":
			return val
		case "Hardware", "CPU part":
			if fallback == "" {
				fallback = key + " " + val
			}
		}
	}
	return fallback
}
