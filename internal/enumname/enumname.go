// Package enumname names the values of a small enumeration that counts
// from 0, both ways: the policy values a scenario's policies: block and
// --policy take ("2M", "folio", "guest_inhibit") and the enum they stand
// for.
package enumname

import (
	"fmt"
	"strings"
)

// Table is the names of the values 0..len(names)-1 of T, for the policy
// key (e.g. "hugepages") and Go type name (e.g. "HugePages") it reports
// in errors and for an unnamed value.
type Table[T ~uint8] struct {
	key, typ string
	names    []string
}

// New returns the table of names, in value order.
func New[T ~uint8](key, typ string, names ...string) Table[T] {
	return Table[T]{key: key, typ: typ, names: names}
}

// String names v, or "Type(v)" for a value without a name.
func (t Table[T]) String(v T) string {
	if int(v) < len(t.names) {
		return t.names[v]
	}
	return fmt.Sprintf("%s(%d)", t.typ, uint8(v))
}

// Parse reads a name; any other string is an error naming the key and
// every value it takes.
func (t Table[T]) Parse(s string) (T, error) {
	for i, n := range t.names {
		if n == s {
			return T(i), nil
		}
	}
	return 0, fmt.Errorf("%s %q: must be %s", t.key, s, t.choices())
}

// choices lists the names as a sentence: "a, b or c".
func (t Table[T]) choices() string {
	if len(t.names) < 2 {
		return strings.Join(t.names, "")
	}
	last := len(t.names) - 1
	return strings.Join(t.names[:last], ", ") + " or " + t.names[last]
}
