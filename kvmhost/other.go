//go:build !linux

package kvmhost

import (
	"errors"
	"time"
)

// ErrNotLinux is what every call returns off Linux: there is no /dev/kvm.
var ErrNotLinux = errors.New("kvmhost: /dev/kvm exists only on Linux")

// Available reports that /dev/kvm cannot be used here.
func Available() error { return ErrNotLinux }

// FaultRate cannot measure anything here.
func FaultRate(size uint64) (int, time.Duration, string, error) { return 0, 0, "", ErrNotLinux }
