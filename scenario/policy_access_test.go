package scenario

import (
	"reflect"
	"testing"
)

// Every policy key the file format has is settable by name, and reads
// back what was set.
func TestPolicyAccessorsCoverPolicies(t *testing.T) {
	pt := reflect.TypeOf(Policies{})
	for i := range pt.NumField() {
		key := yamlName(pt.Field(i))
		if key == "" || key == "-" {
			continue
		}
		acc, ok := policyAccessors[key]
		if !ok {
			t.Errorf("policy %q has no accessor", key)
			continue
		}
		var p Policies
		want := "true"
		if acc.str != nil {
			want = "some-value"
		}
		if err := setPolicy(&p, key, want); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		if got := policyValue(&p, key); got != want {
			t.Errorf("%s: set %q, read %q", key, want, got)
		}
	}
	if len(policyAccessors) != pt.NumField() {
		t.Errorf("%d accessors for %d policy fields", len(policyAccessors), pt.NumField())
	}
}
