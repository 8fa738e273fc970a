// Package fd is what the model keeps of an open file descriptor: whether
// it was closed. A call on a closed fd fails with EBADF, as fdget() finds
// no file for it, and so does a second close(2).
package fd

import "github.com/tdxsim/tdxsim/errno"

// State is one fd's open/closed state; the zero value is open.
type State struct{ closed bool }

// Check is the prologue of a call on the fd named what ("VM",
// "guest_memfd"): EBADF once it is closed.
func (s *State) Check(op, what string) error {
	if s.closed {
		return errno.New(op, errno.EBADF, what+" fd is closed")
	}
	return nil
}

// Close closes the fd: EBADF when it already is.
func (s *State) Close(what string) error {
	if s.closed {
		return errno.New("close", errno.EBADF, what+" fd already closed")
	}
	s.closed = true
	return nil
}

// Closed reports whether the fd was closed.
func (s *State) Closed() bool { return s.closed }
