package fuzz

// OutputError is a reproducer that could not be written to Config.Out: a
// failure of the output, not of a check.
type OutputError struct {
	Dir string
	Err error
}

func (e *OutputError) Error() string {
	return "writing a reproducer to " + e.Dir + ": " + e.Err.Error()
}

// Unwrap returns Err.
func (e *OutputError) Unwrap() error { return e.Err }
