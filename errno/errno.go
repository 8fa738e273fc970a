// Package errno holds the Linux error numbers the model's kernel-side calls
// return, printed by name.
//
// The model returns the errno the Linux kernel returns for the same input,
// whatever the machine it runs on, so these are the x86-64 Linux values
// (include/uapi/asm-generic/errno-base.h and errno.h), not the host's
// syscall.Errno: on macOS EOPNOTSUPP is 102, on Linux 95.
package errno

import (
	"errors"
	"fmt"
	"slices"
)

// Errno is a Linux error number.
type Errno uint16

// The error numbers the model uses. Values are Linux x86-64.
const (
	EPERM      Errno = 1
	ENOENT     Errno = 2
	EINTR      Errno = 4
	EIO        Errno = 5
	E2BIG      Errno = 7
	EBADF      Errno = 9
	EAGAIN     Errno = 11
	ENOMEM     Errno = 12
	EACCES     Errno = 13
	EFAULT     Errno = 14
	EBUSY      Errno = 16
	EEXIST     Errno = 17
	ENODEV     Errno = 19
	EINVAL     Errno = 22
	EMFILE     Errno = 24
	ENOTTY     Errno = 25
	EFBIG      Errno = 27
	ENOSPC     Errno = 28
	ESPIPE     Errno = 29
	ERANGE     Errno = 34
	EOPNOTSUPP Errno = 95
	EHWPOISON  Errno = 133
)

var names = map[Errno]string{
	EPERM: "EPERM", ENOENT: "ENOENT", EINTR: "EINTR", EIO: "EIO", E2BIG: "E2BIG",
	EBADF: "EBADF", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM", EACCES: "EACCES",
	EFAULT: "EFAULT", EBUSY: "EBUSY", EEXIST: "EEXIST", ENODEV: "ENODEV",
	EINVAL: "EINVAL", EMFILE: "EMFILE", ENOTTY: "ENOTTY", EFBIG: "EFBIG",
	ENOSPC: "ENOSPC", ESPIPE: "ESPIPE", ERANGE: "ERANGE",
	EOPNOTSUPP: "EOPNOTSUPP", EHWPOISON: "EHWPOISON",
}

// String returns the errno's name ("EINVAL"), or "errno N" for one the model
// never returns.
func (e Errno) String() string {
	if n, ok := names[e]; ok {
		return n
	}
	return fmt.Sprintf("errno %d", uint16(e))
}

// Error makes an Errno an error.
func (e Errno) Error() string { return e.String() }

// Error is a refused call: the operation, the errno the kernel returns, the
// rule that refused it, and the error that caused it (a failed allocation,
// an injected fault), so that a user sees why and a caller can test the
// errno or the cause with errors.Is.
type Error struct {
	Op    string // the ioctl or file operation, e.g. "KVM_SET_USER_MEMORY_REGION2"
	Errno Errno
	Rule  string // the rule, e.g. "guest_memfd_offset must be page aligned"
	Err   error  // the cause, or nil; its text ends the message
}

func (e *Error) Error() string {
	s := e.Op + ": " + e.Errno.String()
	if e.Rule != "" {
		s += ": " + e.Rule
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the Errno and the cause, so errors.Is(err, errno.EINVAL)
// and errors.Is(err, cause) both work.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Errno}
	}
	return []error{e.Errno, e.Err}
}

// Is reports whether target is e's Errno.
func (e *Error) Is(target error) bool {
	n, ok := target.(Errno)
	return ok && n == e.Errno
}

// New returns an *Error.
func New(op string, e Errno, rule string) error { return &Error{Op: op, Errno: e, Rule: rule} }

// Newf returns an *Error with a formatted rule.
func Newf(op string, e Errno, format string, args ...any) error {
	return &Error{Op: op, Errno: e, Rule: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error caused by cause: the message ends with cause's
// text and errors.Is and errors.As see through to it.
func Wrap(op string, e Errno, cause error) error { return &Error{Op: op, Errno: e, Err: cause} }

// Wrapf is Wrap with a formatted rule before the cause.
func Wrapf(op string, e Errno, cause error, format string, args ...any) error {
	return &Error{Op: op, Errno: e, Rule: fmt.Sprintf(format, args...), Err: cause}
}

// Of returns the errno carried by err: 0 for nil, the Errno an *Error or a
// wrapped Errno holds, or EIO for an error that carries none (a model bug
// surfaced as the kernel's catch-all).
func Of(err error) Errno {
	if err == nil {
		return 0
	}
	var e Errno
	if errors.As(err, &e) {
		return e
	}
	return EIO
}

// ByName returns the errno named name ("EINVAL"), one of those the model
// uses.
func ByName(name string) (Errno, bool) {
	for e, n := range names {
		if n == name {
			return e, true
		}
	}
	return 0, false
}

// Names returns the names of the errnos the model uses, sorted.
func Names() []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
