//go:build linux

package mcpproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// guardSupported says whether PathStrict can watch paths here.
const guardSupported = true

// pathGuard watches, with inotify, the directories on the paths of one
// forwarded call, from before rulelock's last check until the upstream's
// answer. It closes the time-of-check window of PathStrict as far as a
// proxy can:
//
//   - each directory is opened from its parent with O_NOFOLLOW and
//     watched through its own descriptor (/proc/self/fd), so the watch is
//     on the very directory rulelock walked; a symbolic link anywhere on
//     the path is refused;
//   - every rename, creation or removal of a name on the path in a
//     watched directory, after its watch is set, queues an event; a queue
//     overflow, a watched directory moved or removed, or a file system
//     unmounted count as changes too;
//   - after the upstream answers, the queue is read: any such event means
//     the upstream may have opened something else, and the call's result
//     is withheld.
//
// A racer who swaps a directory for a link and back while the server
// opens the path leaves two events behind: it can make the upstream open
// outside the root, but what it read never reaches the agent. What the
// guard cannot undo is a write the upstream made through the swapped path;
// that call is recorded with status unknown. The last name of the path is
// watched only for tools whose definition says they are read-only: a tool
// that writes replaces that name itself, and its events cannot be told
// from a racer's.
type pathGuard struct {
	fd    int
	names map[int32]map[string]bool // watch descriptor → the names on the paths
}

const guardMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// guard walks each resolved path again without following links and
// starts watching it; watchLast says whether the last name (or the first
// missing one) is watched too.
func (r *pathResolver) guard(paths []string, watchLast bool) (*pathGuard, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("path guard: inotify: %w", err)
	}
	g := &pathGuard{fd: fd, names: map[int32]map[string]bool{}}
	for _, p := range paths {
		if err := g.watch(r.rootOf(p), p, watchLast); err != nil {
			g.close()
			return nil, err
		}
	}
	return g, nil
}

func (g *pathGuard) watch(root, p string, watchLast bool) error {
	if root == "" {
		return fmt.Errorf("%w: %q is outside the roots", errPathChanged, p)
	}
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("path guard: open root %q: %w", root, err)
	}
	defer func() { unix.Close(dir) }()
	rest := strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
	if rest == "" {
		return nil
	}
	names := strings.Split(rest, "/")
	cur := root
	for i, name := range names {
		last := i == len(names)-1
		wd, err := unix.InotifyAddWatch(g.fd, "/proc/self/fd/"+strconv.Itoa(dir), guardMask)
		if err != nil {
			return fmt.Errorf("path guard: watch %q: %w", cur, err)
		}
		next, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			// Nothing below exists: the upstream will create it, or fail.
			if watchLast {
				g.add(wd, name)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("path guard: open %q: %w", filepath.Join(cur, name), err)
		}
		if !last || watchLast {
			g.add(wd, name)
		}
		var st unix.Stat_t
		err = unix.Fstat(next, &st)
		unix.Close(dir)
		dir = next
		cur = filepath.Join(cur, name)
		switch {
		case err != nil:
			return fmt.Errorf("path guard: stat %q: %w", cur, err)
		case st.Mode&unix.S_IFMT == unix.S_IFLNK:
			return fmt.Errorf("%w: %q is now a symbolic link", errPathChanged, cur)
		case !last && st.Mode&unix.S_IFMT != unix.S_IFDIR:
			return fmt.Errorf("%w: %q is no longer a directory", errPathChanged, cur)
		}
	}
	return nil
}

func (g *pathGuard) add(wd int, name string) {
	w := int32(wd)
	if g.names[w] == nil {
		g.names[w] = map[string]bool{}
	}
	g.names[w][name] = true
}

// changed reads the events queued so far and reports whether any of them
// touches a watched name. An error reading the queue counts as a change.
func (g *pathGuard) changed() (bool, string) {
	buf := make([]byte, 16<<10)
	const gone = unix.IN_Q_OVERFLOW | unix.IN_IGNORED | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_UNMOUNT
	for {
		n, err := unix.Read(g.fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return false, ""
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return true, "reading the path guard: " + err.Error()
		case n < unix.SizeofInotifyEvent:
			return true, "the path guard read a short event"
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			size := int(binary.NativeEndian.Uint32(buf[off+12:]))
			end := off + unix.SizeofInotifyEvent + size
			if end > n {
				return true, "the path guard read a torn event"
			}
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:end]), "\x00")
			off = end
			if mask&gone != 0 {
				return true, "a directory on the path was moved or removed, or events were lost"
			}
			if g.names[wd][name] {
				return true, fmt.Sprintf("%q was renamed, created or removed on the path", name)
			}
		}
	}
}

func (g *pathGuard) close() { unix.Close(g.fd) }
