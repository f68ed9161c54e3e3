// Package fsx holds the few file-system operations the audit log needs
// beyond package os: fdatasync, preallocation, an advisory directory lock,
// and durable whole-file writes for keys, public keys and tokens. It is
// nobody's API.
package fsx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrLocked is returned by Lock when another process holds the lock.
var ErrLocked = errors.New("locked by another process")

// Preallocate extends f to size bytes by writing zeros from offset from, so
// that later writes into the region need no allocation and an fdatasync after
// them has no metadata to flush.
func Preallocate(f *os.File, from, size int64) error {
	zeros := make([]byte, 1<<20)
	for off := from; off < size; {
		n := min(int64(len(zeros)), size-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("preallocate %s: %w", f.Name(), err)
		}
		off += n
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("preallocate %s: %w", f.Name(), err)
	}
	return nil
}

// SyncDir makes the creation or removal of files in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// WriteFileAtomic writes data to path through a temporary file, fsync and
// rename, then syncs the directory: after a crash path holds either its old
// content or data, never a part of it.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// WriteNewFile creates path holding data, durably, as WriteFileAtomic does,
// but fails with an error wrapping os.ErrExist if path exists: the file
// appears complete (a hard link to a synced temporary file) or not at all.
// It is how key files are created, so that no key is ever overwritten.
func WriteNewFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// CreateSynced creates path, which must not exist, with mode perm, writes
// data and fsyncs it. The caller makes the new name durable (SyncDir of
// its directory, or of the directory it is renamed into).
func CreateSynced(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	return writeSync(f, data, perm)
}

// writeTemp writes data to a synced temporary file next to path, with mode
// perm, and returns its name.
func writeTemp(path string, data []byte, perm os.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	if err := writeSync(f, data, perm); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return tmp, nil
}

func writeSync(f *os.File, data []byte, perm os.FileMode) error {
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
