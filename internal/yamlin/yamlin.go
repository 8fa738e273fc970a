// Package yamlin holds what the project's YAML input files share: the
// one-line bad-input error (file:line: field: rule), the size scalar, and
// the translation of yaml.v3's errors into that form.
package yamlin

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tdxsim/tdxsim/addr"
)

// InputError is bad input: it names the file, the line, the field and the
// rule broken.
type InputError struct {
	File  string
	Line  int
	Field string
	Rule  string
	// Err is the error behind Rule when there is one (a file that could
	// not be read, a damaged firmware image), for errors.Is and As.
	Err error
}

// Unwrap returns Err.
func (e *InputError) Unwrap() error { return e.Err }

func (e *InputError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Rule)
	}
	return fmt.Sprintf("%s: %s", loc, e.Rule)
}

// Size is a byte count or address written as an integer, or a string in
// decimal, 0x hex, or with a K/M/G/T suffix (powers of 1024).
type Size uint64

// UnmarshalYAML accepts integers and suffixed strings.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a size (4096, 0x1000, 2M), got a %s", KindName(n.Kind))
	}
	v, err := addr.ParseSize(strings.TrimSpace(n.Value))
	if err != nil {
		return err
	}
	*s = Size(v)
	return nil
}

// KindName names a node kind in an error.
func KindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	}
	return "value"
}

// Error turns a yaml.v3 decoding error ("line N: ...", or a TypeError's
// first message) into an InputError for path, its rule prefixed.
func Error(path, prefix string, err error) *InputError {
	var te *yaml.TypeError
	msg := err.Error()
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if strings.HasPrefix(msg, "line ") {
		if i := strings.Index(msg, ":"); i > 0 {
			if n, err := strconv.Atoi(msg[5:i]); err == nil {
				return &InputError{File: path, Line: n, Rule: prefix + strings.TrimSpace(msg[i+1:])}
			}
		}
	}
	return &InputError{File: path, Rule: prefix + msg}
}

// ReadFile reads an input file of at most limit bytes. Anything but a
// regular file (a directory, a FIFO, a device such as /dev/zero) and any
// file over the cap is refused as bad input before it is read whole.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &InputError{File: path, Rule: err.Error(), Err: err}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, &InputError{File: path, Rule: err.Error(), Err: err}
	}
	if !st.Mode().IsRegular() {
		return nil, &InputError{File: path, Rule: "not a regular file (" + fileKind(st.Mode()) + "): want a YAML file"}
	}
	if st.Size() > limit {
		return nil, &InputError{File: path, Rule: fmt.Sprintf("%d bytes: over the %d-byte cap for an input file", st.Size(), limit)}
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, &InputError{File: path, Rule: err.Error(), Err: err}
	}
	if int64(len(data)) > limit {
		return nil, &InputError{File: path, Rule: fmt.Sprintf("over the %d-byte cap for an input file", limit)}
	}
	return data, nil
}

// Load reads an input file of at most limit bytes (ReadFile) and hands its
// text to parse, which names path in its errors: the one way every input
// format (scenario, memory layout) is loaded from a file.
func Load[T any](path string, limit int64, parse func(path string, data []byte) (T, error)) (T, error) {
	data, err := ReadFile(path, limit)
	if err != nil {
		var zero T
		return zero, err
	}
	return parse(path, data)
}

func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "not a plain file"
}
