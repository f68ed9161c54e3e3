package policy

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/rulelock/rulelock/internal/strictjson"
	"go.yaml.in/yaml/v3"
)

// Load compiles the policy at the root of fsys: every .rules file, and every
// data document (.json, .yaml, .yml), which rules see as data.<name> where
// name is the file name without its extension. Test files (*_test.yaml,
// *_test.json) are not part of the policy. Subdirectories are not read.
func Load(fsys fs.FS, opts Options) (*Policy, error) {
	srcs, err := ReadSources(fsys)
	if err != nil {
		return nil, err
	}
	return FromSources(srcs, opts)
}

// ReadSources reads the policy files at the root of fsys, sorted by name.
func ReadSources(fsys fs.FS) ([]Source, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read policy directory: %w", err)
	}
	var srcs []Source
	for _, e := range entries {
		if e.IsDir() || !IsPolicyFile(e.Name()) {
			continue
		}
		if !e.Type().IsRegular() {
			return nil, fmt.Errorf("policy file %s is not a regular file", e.Name())
		}
		data, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read policy file: %w", err)
		}
		srcs = append(srcs, Source{Name: e.Name(), Data: data})
	}
	if !hasRules(srcs) {
		return nil, fmt.Errorf("no .rules files in the policy directory")
	}
	return srcs, nil
}

// IsPolicyFile reports whether a file name is a rules file or a data document.
func IsPolicyFile(name string) bool {
	return strings.HasSuffix(name, ".rules") || isDataFile(name)
}

// IsTestFile reports whether a file name is a policy test file.
func IsTestFile(name string) bool {
	for _, ext := range []string{"_test.yaml", "_test.yml", "_test.json"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

func isDataFile(name string) bool {
	if IsTestFile(name) {
		return false
	}
	switch path.Ext(name) {
	case ".json", ".yaml", ".yml":
		return true
	}
	return false
}

func hasRules(srcs []Source) bool {
	for _, s := range srcs {
		if strings.HasSuffix(s.Name, ".rules") {
			return true
		}
	}
	return false
}

// FromSources parses and compiles a policy from its sources. The digest
// covers every source.
func FromSources(srcs []Source, opts Options) (*Policy, error) {
	var files []*File
	var errs ErrorList
	data := map[string]any{}
	dataFrom := map[string]string{}
	sorted := append([]Source(nil), srcs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, s := range sorted {
		if strings.HasSuffix(s.Name, ".rules") {
			f, err := Parse(s.Name, s.Data)
			if err != nil {
				errs = append(errs, err.(ErrorList)...)
				continue
			}
			files = append(files, f)
			continue
		}
		key := strings.TrimSuffix(path.Base(s.Name), path.Ext(s.Name))
		if prev, ok := dataFrom[key]; ok {
			errs = append(errs, &Error{Pos{s.Name, 1, 1}, fmt.Sprintf("data.%s is also defined by %s", key, prev)})
			continue
		}
		v, err := DecodeData(s.Name, s.Data)
		if err != nil {
			errs = append(errs, &Error{Pos{s.Name, 1, 1}, err.Error()})
			continue
		}
		data[key], dataFrom[key] = v, s.Name
	}
	if len(errs) > 0 {
		return nil, errs
	}
	p, err := Compile(files, data, opts)
	if err != nil {
		return nil, err
	}
	p.digest = digest(srcs)
	return p, nil
}

// DecodeData decodes a JSON or YAML document into the values the strict
// decoder produces (all numbers float64, exact).
func DecodeData(name string, b []byte) (any, error) {
	if path.Ext(name) == ".json" {
		v, err := strictjson.Decode(b, strictjson.Limits{MaxBytes: maxFileSize})
		if err != nil {
			return nil, fmt.Errorf("data document: %w", err)
		}
		return v, nil
	}
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("data document: %w", err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("data document: %w", err)
	}
	out, err := strictjson.Decode(j, strictjson.Limits{MaxBytes: 4 * maxFileSize})
	if err != nil {
		return nil, fmt.Errorf("data document: %w", err)
	}
	return out, nil
}
