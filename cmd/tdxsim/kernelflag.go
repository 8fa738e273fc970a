package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/tdxsim/tdxsim/kernel"
	"github.com/tdxsim/tdxsim/scenario"
)

// kernelFlag collects --kernel NAME (repeatable where a command takes two).
type kernelFlag []string

func (k *kernelFlag) String() string { return strings.Join(*k, ",") }

// Set takes any name: the scenario's load rejects an unknown one in one
// line naming the known profiles.
func (k *kernelFlag) Set(v string) error {
	*k = append(*k, v)
	return nil
}

// addKernelFlag adds --kernel to fs; one line per command.
func addKernelFlag(fs *flag.FlagSet) *kernelFlag {
	k := new(kernelFlag)
	fs.Var(k, "kernel", "kernel profile to stand for (tdxsim kernels; default: the scenario's kernel:, else "+kernel.Default+"); it sets the policies' defaults")
	return k
}

// load is loadScenario under the single --kernel given: the scenario at
// path with policies set, or nil and the exit code to stop with.
func (k kernelFlag) load(cmd, path string, policies policyFlag, stderr io.Writer) (*scenario.File, int) {
	name, ok := k.one(cmd, stderr)
	if !ok {
		return nil, exitBadInput
	}
	return loadScenario(cmd, path, name, policies, stderr)
}

// one returns the single --kernel given ("" for none), or an error when
// the command takes one and got more.
func (k kernelFlag) one(cmd string, stderr io.Writer) (string, bool) {
	if len(k) > 1 {
		fmt.Fprintf(stderr, "tdxsim %s: --kernel given %d times; it takes one\n", cmd, len(k))
		return "", false
	}
	if len(k) == 0 {
		return "", true
	}
	return k[0], true
}

// setKernel applies --kernel name to f ("" leaves the file's choice).
func setKernel(f *scenario.File, name string) error {
	if name == "" {
		return nil
	}
	return f.SetKernel(name)
}

// loadFirst is for the commands that run a scenario beside a second one
// (compare, serve): the profile of each run (the first --kernel for A,
// the last for B; "" for none) and A, the scenario at path, or nil and
// the exit code to stop with.
func (k kernelFlag) loadFirst(cmd, path string, stderr io.Writer) (a *scenario.File, kA, kB string, code int) {
	if len(k) > 0 {
		kA, kB = k[0], k[len(k)-1]
	}
	a, code = loadScenario(cmd, path, kA, nil, stderr)
	return a, kA, kB, code
}
