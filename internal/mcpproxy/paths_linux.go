//go:build linux

package mcpproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

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
//
// One inotify instance serves all of an upstream's calls (closing an
// instance that holds watches waits for the kernel's SRCU grace period, ~10
// ms): watches stay cached on the directories calls walked, up to
// maxCachedWatches, and a call registers interest in the names on its
// paths.
type pathGuard struct {
	w     *pathWatcher
	lost  uint64 // w.lost when the guard started
	marks []guardMark
	looks []guardLook
	done  bool
}

// guardLook is what a watched name led to when the guard started.
type guardLook struct {
	path     string
	absent   bool
	dev, ino uint64
}

type guardMark struct {
	wd      int32
	name    string // "" when only the directory itself is watched
	gone    uint64
	changes uint64
}

// pathWatcher is the inotify instance of one upstream.
type pathWatcher struct {
	mu   sync.Mutex
	fd   int // -1 until the first guard
	dirs map[int32]*watchedDir
	lost uint64 // bumped when the kernel's queue overflowed
	buf  []byte
}

type watchedDir struct {
	gone  uint64                // bumped when the directory is moved, removed or unmounted
	names map[string]*nameState // the names calls in flight watch
}

type nameState struct {
	refs    int
	changes uint64
}

// maxCachedWatches bounds the directories watched by no call in flight.
const maxCachedWatches = 1024

const guardMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

func newPathWatcher() *pathWatcher {
	return &pathWatcher{fd: -1, dirs: map[int32]*watchedDir{}}
}

// guard walks each resolved path again without following links and
// watches it; watchLast says whether the last name (or the first missing
// one) is watched too.
func (r *pathResolver) guard(paths []string, watchLast bool) (*pathGuard, error) {
	w := r.watcher
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd < 0 {
		fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("path guard: inotify: %w", err)
		}
		w.fd = fd
	}
	w.drain()
	w.evict()
	g := &pathGuard{w: w, lost: w.lost}
	for _, p := range paths {
		if err := g.walk(r.rootOf(p), p, watchLast); err != nil {
			g.release()
			return nil, err
		}
	}
	return g, nil
}

// walk opens each directory of p from its parent with O_NOFOLLOW,
// watching it through its own descriptor before looking up the next name.
func (g *pathGuard) walk(root, p string, watchLast bool) error {
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
		return g.mark(dir, "", root)
	}
	names := strings.Split(rest, "/")
	cur := root
	for i, name := range names {
		last := i == len(names)-1
		// Look the name up, then watch the directory and look again: from
		// the watch on, any change to the name is an event, and the second
		// look says the name still leads where the first one went.
		next, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			// Nothing below exists: the upstream will create it, or fail.
			// A read-only tool's missing name is watched: a link created
			// there would be followed.
			markName := ""
			if watchLast {
				markName = name
			}
			if err := g.mark(dir, markName, cur); err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("%w: %q appeared", errPathChanged, filepath.Join(cur, name))
			}
			if markName != "" {
				g.looks = append(g.looks, guardLook{path: filepath.Join(cur, name), absent: true})
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("path guard: open %q: %w", filepath.Join(cur, name), err)
		}
		markName := name
		if last && !watchLast {
			markName = ""
		}
		if err := g.mark(dir, markName, cur); err != nil {
			unix.Close(next)
			return err
		}
		var st, again unix.Stat_t
		err = unix.Fstat(next, &st)
		if err == nil {
			err = unix.Fstatat(dir, name, &again, unix.AT_SYMLINK_NOFOLLOW)
		}
		unix.Close(dir)
		dir = next
		cur = filepath.Join(cur, name)
		switch {
		case err != nil:
			return fmt.Errorf("%w: %q: %v", errPathChanged, cur, err)
		case st.Mode&unix.S_IFMT == unix.S_IFLNK:
			return fmt.Errorf("%w: %q is now a symbolic link", errPathChanged, cur)
		case st.Dev != again.Dev || st.Ino != again.Ino:
			return fmt.Errorf("%w: %q was replaced", errPathChanged, cur)
		case !last && st.Mode&unix.S_IFMT != unix.S_IFDIR:
			return fmt.Errorf("%w: %q is no longer a directory", errPathChanged, cur)
		}
		if markName != "" {
			g.looks = append(g.looks, guardLook{path: cur, dev: uint64(st.Dev), ino: uint64(st.Ino)})
		}
	}
	return nil
}

// mark watches the directory open as dir and registers interest in name.
func (g *pathGuard) mark(dir int, name, path string) error {
	w := g.w
	wd, err := unix.InotifyAddWatch(w.fd, "/proc/self/fd/"+strconv.Itoa(dir), guardMask)
	if err != nil {
		return fmt.Errorf("path guard: watch %q: %w", path, err)
	}
	d := w.dirs[int32(wd)]
	if d == nil {
		d = &watchedDir{names: map[string]*nameState{}}
		w.dirs[int32(wd)] = d
	}
	m := guardMark{wd: int32(wd), name: name, gone: d.gone}
	if name != "" {
		n := d.names[name]
		if n == nil {
			n = &nameState{}
			d.names[name] = n
		}
		n.refs++
		m.changes = n.changes
	}
	g.marks = append(g.marks, m)
	return nil
}

// changed reports whether a name on the guarded paths may have changed
// since the guard started: an event queued for it, a watched directory
// moved or removed, lost events, or an error reading them.
//
// The kernel queues a rename's event just after the rename takes effect,
// while it still holds the lock of the directory: so a rename can be
// visible to the server with its event not queued yet, but no second
// change in that directory can happen until it is. changed therefore reads
// the queue, looks at every watched name again (a rename still in flight
// shows there), and reads the queue once more (a rename that finished
// meanwhile has queued its event).
func (g *pathGuard) changed() (bool, string) {
	w := g.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if changed, why := g.events(); changed {
		return true, why
	}
	for _, l := range g.looks {
		var st unix.Stat_t
		err := unix.Lstat(l.path, &st)
		switch {
		case l.absent && errors.Is(err, unix.ENOENT):
		case l.absent || err != nil:
			return true, fmt.Sprintf("%q changed", l.path)
		case uint64(st.Dev) != l.dev || uint64(st.Ino) != l.ino:
			return true, fmt.Sprintf("%q was replaced", l.path)
		}
	}
	return g.events()
}

// events reads the queue and compares the guard's names with it; the
// caller holds w.mu.
func (g *pathGuard) events() (bool, string) {
	w := g.w
	if err := w.drain(); err != nil {
		return true, err.Error()
	}
	if w.lost != g.lost {
		return true, "the kernel's event queue overflowed"
	}
	for _, m := range g.marks {
		d := w.dirs[m.wd]
		switch {
		case d == nil || d.gone != m.gone:
			return true, "a directory on the path was moved or removed"
		case m.name != "" && (d.names[m.name] == nil || d.names[m.name].changes != m.changes):
			return true, fmt.Sprintf("%q was renamed, created or removed on the path", m.name)
		}
	}
	return false, ""
}

// close ends the guard's interest in its names.
func (g *pathGuard) close() {
	g.w.mu.Lock()
	defer g.w.mu.Unlock()
	g.release()
}

func (g *pathGuard) release() {
	if g.done {
		return
	}
	g.done = true
	for _, m := range g.marks {
		d := g.w.dirs[m.wd]
		if d == nil || m.name == "" {
			continue
		}
		if n := d.names[m.name]; n != nil {
			if n.refs--; n.refs == 0 {
				delete(d.names, m.name)
			}
		}
	}
}

// drain reads every queued event; the caller holds w.mu.
func (w *pathWatcher) drain() error {
	if w.buf == nil {
		w.buf = make([]byte, 64<<10)
	}
	const gone = unix.IN_IGNORED | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_UNMOUNT
	for {
		n, err := unix.Read(w.fd, w.buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			w.lost++
			return fmt.Errorf("reading the path guard: %w", err)
		}
		buf := w.buf[:n]
		for len(buf) >= unix.SizeofInotifyEvent {
			wd := int32(binary.NativeEndian.Uint32(buf))
			mask := binary.NativeEndian.Uint32(buf[4:])
			end := unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[12:]))
			if end > len(buf) {
				w.lost++
				return errors.New("the path guard read a torn event")
			}
			name := strings.TrimRight(string(buf[unix.SizeofInotifyEvent:end]), "\x00")
			buf = buf[end:]
			switch d := w.dirs[wd]; {
			case mask&unix.IN_Q_OVERFLOW != 0:
				w.lost++
			case d == nil:
			case mask&gone != 0:
				d.gone++
				if mask&unix.IN_IGNORED != 0 {
					delete(w.dirs, wd) // the kernel dropped the watch
				}
			case d.names[name] != nil:
				d.names[name].changes++
			}
		}
	}
}

// evict removes the watches no call needs once there are too many; the
// caller holds w.mu.
func (w *pathWatcher) evict() {
	if len(w.dirs) <= maxCachedWatches {
		return
	}
	for wd, d := range w.dirs {
		if len(d.names) == 0 {
			unix.InotifyRmWatch(w.fd, uint32(wd))
			delete(w.dirs, wd)
		}
	}
}

func (w *pathWatcher) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd >= 0 {
		unix.Close(w.fd)
		w.fd = -1
	}
}
