package mcpproxy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// resolvePaths replaces each absolute path among the named arguments by
// where it really leads: lexically cleaned, then with every symbolic link
// of its existing part resolved. The policy judges the resolved path and
// the upstream receives exactly it.
func resolvePaths(args map[string]any, names []string) error {
	for _, name := range names {
		v, ok := args[name]
		if !ok {
			continue
		}
		switch x := v.(type) {
		case string:
			r, err := resolvePath(x)
			if err != nil {
				return fmt.Errorf("argument %q: %v", name, err)
			}
			args[name] = r
		case []any:
			out := make([]any, len(x))
			for i, e := range x {
				s, ok := e.(string)
				if !ok {
					return fmt.Errorf("argument %q: element %d is not a string", name, i)
				}
				r, err := resolvePath(s)
				if err != nil {
					return fmt.Errorf("argument %q: %v", name, err)
				}
				out[i] = r
			}
			args[name] = out
		default:
			return fmt.Errorf("argument %q: a path must be a string", name)
		}
	}
	return nil
}

// checkResolved fails when a named path argument is not already resolved.
func checkResolved(args map[string]any, names []string) error {
	for _, name := range names {
		v, ok := args[name]
		if !ok {
			continue
		}
		list, isList := v.([]any)
		if !isList {
			list = []any{v}
		}
		for _, e := range list {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("argument %q: a path must be a string", name)
			}
			r, err := resolvePath(s)
			if err != nil {
				return fmt.Errorf("argument %q: %v", name, err)
			}
			if r != s {
				return fmt.Errorf("argument %q: path %q is not resolved (it leads to %q)", name, s, r)
			}
		}
	}
	return nil
}

// resolvePath resolves an absolute path; a relative one is returned as it
// is (a policy that wants absolute paths denies it). The part of the path
// that does not exist yet (a file about to be written) is kept, cleaned.
func resolvePath(p string) (string, error) { return resolveDepth(p, 0) }

func resolveDepth(p string, depth int) (string, error) {
	if depth > 40 {
		return "", errors.New("too many levels of symbolic links")
	}
	if strings.ContainsRune(p, 0) {
		return "", errors.New("path contains a NUL byte")
	}
	if !filepath.IsAbs(p) {
		return p, nil
	}
	clean := filepath.Clean(p)
	existing, rest := clean, ""
	for {
		r, err := filepath.EvalSymlinks(existing)
		if err == nil {
			if rest == "" {
				return r, nil
			}
			return filepath.Join(r, rest), nil
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, os.ErrPermission) && !isNotDir(err) {
			return "", err
		}
		if fi, lerr := os.Lstat(existing); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
			// A dangling link: a write would follow it, so follow it here.
			target, err := os.Readlink(existing)
			if err != nil {
				return "", err
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(existing), target)
			}
			return resolveDepth(filepath.Join(target, rest), depth+1)
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			return clean, nil
		}
		if rest == "" {
			rest = filepath.Base(existing)
		} else {
			rest = filepath.Join(filepath.Base(existing), rest)
		}
		existing = parent
	}
}

func isNotDir(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "not a directory")
}
