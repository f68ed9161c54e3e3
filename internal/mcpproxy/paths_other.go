//go:build !linux

package mcpproxy

import "errors"

// guardSupported says whether PathStrict can watch paths here: it needs
// Linux's inotify, so elsewhere only PathResolve is available.
const guardSupported = false

type pathGuard struct{}

type pathWatcher struct{}

func newPathWatcher() *pathWatcher { return &pathWatcher{} }

func (w *pathWatcher) close() {}

func (r *pathResolver) guard([]string, bool) (*pathGuard, error) {
	return nil, errors.New("path_mode strict needs Linux (inotify)")
}

func (g *pathGuard) changed() (bool, string) { return true, "no path guard" }

func (g *pathGuard) close() {}
