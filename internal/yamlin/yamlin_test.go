package yamlin

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small.yaml")
	if err := os.WriteFile(small, []byte("a: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	parse := func(path string, data []byte) (string, error) { return path + ":" + string(data), nil }

	got, err := Load(small, 16, parse)
	if err != nil || got != small+":a: 1\n" {
		t.Fatalf("Load(small) = %q, %v; want the text handed to parse", got, err)
	}

	_, err = Load(small, 2, parse)
	var in *InputError
	if !errors.As(err, &in) || in.File != small || !strings.Contains(in.Rule, "over the 2-byte cap") {
		t.Fatalf("Load over the cap: %v; want an InputError naming the file and the cap", err)
	}

	_, err = Load(dir, 16, func(string, []byte) (string, error) {
		t.Fatal("parse called for a directory")
		return "", nil
	})
	if !errors.As(err, &in) || !strings.Contains(in.Rule, "not a regular file") {
		t.Fatalf("Load(dir): %v; want not a regular file", err)
	}
}
