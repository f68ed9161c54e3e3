//go:build unix && !linux

package fsx

import (
	"fmt"
	"os"
	"syscall"
)

// Datasync flushes f to stable storage. Outside Linux it is fsync(2)
// (on macOS, F_FULLFSYNC would be stronger still).
func Datasync(f *os.File) error { return f.Sync() }

// Lock takes an exclusive advisory lock (flock(2)) on path; see the Linux
// version.
func Lock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if err == syscall.EWOULDBLOCK {
			return nil, fmt.Errorf("lock %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
