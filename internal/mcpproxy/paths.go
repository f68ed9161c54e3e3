package mcpproxy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/text/unicode/norm"
)

// Path identity.
//
// A filesystem server does not open the string it is given: it opens what
// that string resolves to. The reference server
// (@modelcontextprotocol/server-filesystem) makes the path absolute against
// its allowed directories, removes "." and ".." and repeated slashes,
// follows every symbolic link (realpath), and, when a name does not exist,
// looks for a directory entry equal to it under Unicode NFC ("\u212AEY.txt",
// with a Kelvin sign, opens "KEY.txt"). It does not fold case and does not
// apply NFKC ("ＫＥＹ.txt", fullwidth, is a different name).
//
// rulelock resolves each path argument the same way before the decision,
// the policy judges the resolved path, the log records it, and the upstream
// receives exactly it: a path the server would resolve further is never
// forwarded. Paths that rulelock cannot name unambiguously are refused
// (see pathResolver.resolve). What remains is time: between rulelock's
// check and the server's open, someone else who can write inside a root can
// swap a directory for a symbolic link. PathStrict (the default) refuses
// every symbolic link and watches the path while the call runs; see guard.

// PathMode says how rulelock treats symbolic links in path arguments.
type PathMode string

const (
	// PathStrict refuses a path that crosses a symbolic link anywhere
	// below its root, and watches every directory on the path while the
	// call runs: if an entry on the path is renamed, created or removed
	// meanwhile, the upstream's result is withheld and the outcome is
	// recorded as unknown. Linux only (inotify). The default.
	PathStrict PathMode = "strict"
	// PathResolve follows symbolic links that stay inside the roots and
	// forwards the resolved path. Between rulelock's check and the
	// server's open, a directory on the path swapped for a link can still
	// redirect the server (docs/mcp.md measures it).
	PathResolve PathMode = "resolve"
)

// Limits on one path, as Linux has them (PATH_MAX, NAME_MAX).
const (
	maxPathBytes = 4096
	maxNameBytes = 255
	maxLinks     = 40
)

// errPathChanged is the outcome of a call whose path changed between the
// decision and the forwarding, or while the upstream ran it.
var errPathChanged = errors.New("a path of the call changed")

// pathResolver resolves the path arguments of one upstream.
type pathResolver struct {
	mode    PathMode
	roots   []string     // real paths of the directories the upstream serves, in its order
	watcher *pathWatcher // strict mode's inotify instance
}

// newPathResolver resolves the configured roots as the server does: each
// made real (symbolic links followed), those that are not directories
// left out. With no root left every path argument is refused.
func newPathResolver(mode PathMode, roots []string) *pathResolver {
	if mode == "" {
		mode = PathStrict
	}
	r := &pathResolver{mode: mode, watcher: newPathWatcher()}
	for _, root := range roots {
		real, err := filepath.EvalSymlinks(filepath.Clean(root))
		if err != nil {
			continue
		}
		if fi, err := os.Stat(real); err != nil || !fi.IsDir() {
			continue
		}
		r.roots = append(r.roots, real)
	}
	return r
}

// resolvePaths replaces each path among the named arguments by what it
// resolves to.
func (r *pathResolver) resolvePaths(args map[string]any, names []string) error {
	return eachPath(args, names, func(name, s string) (string, error) {
		res, err := r.resolve(s)
		if err != nil {
			return "", fmt.Errorf("argument %q: %v", name, err)
		}
		return res, nil
	})
}

// eachPath applies f to every path among the named arguments (a string or
// a list of strings) and stores what it returns.
func eachPath(args map[string]any, names []string, f func(name, path string) (string, error)) error {
	for _, name := range names {
		v, ok := args[name]
		if !ok {
			continue
		}
		switch x := v.(type) {
		case string:
			res, err := f(name, x)
			if err != nil {
				return err
			}
			args[name] = res
		case []any:
			out := make([]any, len(x))
			for i, e := range x {
				s, ok := e.(string)
				if !ok {
					return fmt.Errorf("argument %q: element %d is not a string", name, i)
				}
				res, err := f(name, s)
				if err != nil {
					return err
				}
				out[i] = res
			}
			args[name] = out
		default:
			return fmt.Errorf("argument %q: a path must be a string", name)
		}
	}
	return nil
}

// resolve returns the path p names on the upstream's file system, or why
// it is refused: a NUL, control or invisible format character (bidi,
// zero-width, tag), invalid UTF-8, leading or
// trailing white space (the server trims it for its own check, not for the
// open), a name ending in a dot or a space (Windows and SMB drop them, so
// they alias another name there), a path over 4096 bytes or a name over
// 255, a name equivalent to two entries, a symbolic link in strict mode, a
// dangling link, and anything that does not end inside a root.
func (r *pathResolver) resolve(p string) (string, error) {
	if err := checkPathText(p); err != nil {
		return "", err
	}
	if len(r.roots) == 0 {
		return "", errors.New("the upstream has no roots: no path is allowed")
	}
	abs := r.absolute(p)
	out, err := r.walk(abs, 0)
	if err != nil {
		return "", err
	}
	if r.rootOf(out) == "" {
		return "", fmt.Errorf("path %q resolves to %q, outside the roots", p, out)
	}
	if len(out) > maxPathBytes {
		return "", fmt.Errorf("path resolves to more than %d bytes", maxPathBytes)
	}
	return out, nil
}

func checkPathText(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case len(p) > maxPathBytes:
		return fmt.Errorf("path longer than %d bytes", maxPathBytes)
	case !utf8.ValidString(p):
		return errors.New("path is not valid UTF-8")
	case strings.TrimFunc(p, isJSSpace) != p:
		return fmt.Errorf("path %q has leading or trailing white space", p)
	}
	for _, c := range p {
		switch {
		case c == 0:
			return errors.New("path contains a NUL byte")
		case c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0):
			return fmt.Errorf("path %q contains control character %U", p, c)
		case unicode.Is(unicode.Cf, c):
			// Bidi controls, zero-width characters, tags: a name that
			// shows as another to the human reading the log or approving.
			return fmt.Errorf("path %q contains invisible format character %U", p, c)
		}
	}
	for _, name := range strings.Split(p, "/") {
		if name == "." || name == ".." || name == "" {
			continue
		}
		if len(name) > maxNameBytes {
			return fmt.Errorf("path has a name longer than %d bytes", maxNameBytes)
		}
		if strings.HasSuffix(name, ".") || strings.HasSuffix(name, " ") {
			return fmt.Errorf("path %q has a name ending in a dot or a space", p)
		}
	}
	return nil
}

// isJSSpace is the white space JavaScript's String.prototype.trim removes,
// which the filesystem server applies before its containment check.
func isJSSpace(c rune) bool { return unicode.IsSpace(c) || c == '\uFEFF' }

// absolute makes p absolute as the server does: a relative path joins the
// first root under which it stays, else the first root.
func (r *pathResolver) absolute(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	for _, root := range r.roots {
		if c := filepath.Join(root, p); r.rootOf(c) != "" {
			return c
		}
	}
	return filepath.Join(r.roots[0], p)
}

// rootOf returns the longest root that holds p, or "".
func (r *pathResolver) rootOf(p string) string {
	best := ""
	for _, root := range r.roots {
		if (p == root || strings.HasPrefix(p, root+"/") || root == "/") && len(root) > len(best) {
			best = root
		}
	}
	return best
}

// walk resolves a clean absolute path one name at a time from the root
// that holds it, as the server's realpath and Unicode fallback do.
func (r *pathResolver) walk(abs string, links int) (string, error) {
	root := r.rootOf(abs)
	if root == "" {
		// Outside every root: clean it for the refusal, never walk it.
		return abs, nil
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(abs, root), "/")
	cur := root
	var names []string
	if rest != "" {
		names = strings.Split(rest, "/")
	}
	for i, name := range names {
		next := filepath.Join(cur, name)
		fi, err := os.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) {
			match, err := nfcEntry(cur, name)
			if err != nil {
				return "", err
			}
			if match == "" {
				// Nothing below exists yet (a file about to be written).
				return filepath.Join(append([]string{cur}, names[i:]...)...), nil
			}
			next = filepath.Join(cur, match)
			if fi, err = os.Lstat(next); err != nil {
				return "", err
			}
		} else if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if r.mode != PathResolve {
				return "", fmt.Errorf("path crosses the symbolic link %q (path_mode strict)", next)
			}
			if links >= maxLinks {
				return "", errors.New("too many levels of symbolic links")
			}
			// The link's target, resolved by the kernel's rules (".." after
			// a link is physical); a dangling link is refused, as the
			// server refuses it.
			target, err := filepath.EvalSymlinks(next)
			if err != nil {
				return "", fmt.Errorf("path crosses the symbolic link %q, which leads nowhere: %v", next, err)
			}
			return r.walk(filepath.Join(append([]string{target}, names[i+1:]...)...), links+1)
		}
		if i < len(names)-1 && !fi.IsDir() {
			return "", fmt.Errorf("%q is not a directory", next)
		}
		cur = next
	}
	return cur, nil
}

// nfcEntry returns the entry of dir equal to name under NFC, "" when there
// is none, and an error when there are several: the server opens the one
// it finds and refuses an ambiguous name.
func nfcEntry(dir, name string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	want := norm.NFC.String(name)
	var found []string
	for _, e := range entries {
		if norm.NFC.String(e.Name()) == want {
			found = append(found, e.Name())
		}
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("name %q is Unicode-equivalent to %d entries of %q", name, len(found), dir)
}

// guardPaths checks, before a call is forwarded, that its path arguments
// are still resolved (an action submitted through the HTTP API never
// passed through resolvePaths) and, in strict mode, starts watching them
// until the upstream answers.
func (u *upstream) guardPaths(def *mcp.Tool, args map[string]any) (*pathGuard, error) {
	names := u.cfg.PathArguments
	if len(names) == 0 {
		return nil, nil
	}
	var paths []string
	err := eachPath(args, names, func(name, s string) (string, error) {
		res, err := u.paths.resolve(s)
		switch {
		case err != nil:
			return "", fmt.Errorf("argument %q: %v", name, err)
		case res != s:
			return "", fmt.Errorf("argument %q: path %q is not resolved (it leads to %q)", name, s, res)
		}
		paths = append(paths, s)
		return s, nil
	})
	if err != nil || u.paths.mode == PathResolve {
		return nil, err
	}
	readOnly := def != nil && def.Annotations != nil && def.Annotations.ReadOnlyHint
	return u.paths.guard(paths, readOnly)
}
