package scenario

import (
	"bytes"
	"path/filepath"
	"testing"
)

// Every example survives Marshal and Parse: the file read back marshals to
// the same bytes, and runs to the same report.
func TestMarshalRoundTrip(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.yaml")
	for _, p := range files {
		t.Run(filepath.Base(p), func(t *testing.T) {
			f, err := Load(p)
			if err != nil {
				t.Fatal(err)
			}
			if len(f.TDs) > 0 && len(f.TDs[0].Image) > 0 && f.TDs[0].Image[0].File != "" {
				t.Skip("image files are relative to the example")
			}
			b, err := Marshal(&f.Scenario)
			if err != nil {
				t.Fatal(err)
			}
			g, err := Parse("roundtrip.yaml", b)
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			b2, err := Marshal(&g.Scenario)
			if err != nil || !bytes.Equal(b, b2) {
				t.Fatalf("second marshal differs (%v):\n%s\n---\n%s", err, b, b2)
			}
		})
	}
}
