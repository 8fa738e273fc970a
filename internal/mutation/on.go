//go:build tdxsim_mutation

package mutation

import (
	"fmt"
	"os"
)

// active is the mutation named by TDXSIM_MUTATION, read once at start.
var active = load()

func load() ID {
	name := os.Getenv(EnvVar)
	if name == "" {
		return ""
	}
	if _, ok := Lookup(name); !ok {
		fmt.Fprintf(os.Stderr, "tdxsim: %s=%q: no such mutation (want one of %s)\n", EnvVar, name, names())
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "tdxsim: mutation %s is active: this model has a deliberate bug\n", name)
	return ID(name)
}

// On reports whether mutation id is the active one.
func On(id ID) bool { return active != "" && active == id }

// Active is the active mutation ("" for none).
func Active() ID { return active }

// Built reports whether the binary was built with the mutations.
const Built = true
