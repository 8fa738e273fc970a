package testkit_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// No production file imports testkit: the kit calls testing, and test
// helpers must not reach a binary.
func TestOnlyTestsImportTestkit(t *testing.T) {
	const path = `"github.com/tdxsim/tdxsim/internal/testkit"`
	err := filepath.WalkDir("../..", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), path) {
			t.Errorf("%s imports internal/testkit", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
