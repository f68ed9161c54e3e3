package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadPins: a missing pin file pins nothing; anything but an object of
// tool names and sha256 hashes, read strictly, stops rulelock at start.
func TestReadPins(t *testing.T) {
	dir := t.TempDir()
	if pins, err := readPins(filepath.Join(dir, "absent.json")); err != nil || len(pins) != 0 {
		t.Errorf("missing file: %v %v", pins, err)
	}
	h := "sha256:" + strings.Repeat("ab", 32)
	for name, tc := range map[string]struct {
		body string
		ok   bool
	}{
		"pins":            {`{"fs.read_text_file": "` + h + `"}`, true},
		"short hash":      {`{"fs.read_text_file": "sha256:abcd"}`, false},
		"upper-case hex":  {`{"fs.read_text_file": "` + strings.ToUpper(h) + `"}`, false},
		"not a string":    {`{"fs.read_text_file": true}`, false},
		"duplicate":       {`{"a.b": "` + h + `", "a.b": "` + h + `"}`, false},
		"case variant":    {`{"a.b": "` + h + `", "A.b": "` + h + `"}`, false},
		"array":           {`["` + h + `"]`, false},
		"trailing data":   {`{} {}`, false},
		"not JSON at all": {`fs.read_text_file: ` + h, false},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".json")
		if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := readPins(path)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", name, err, tc.ok)
		}
	}
}
