package audit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestSnapshotLiveLog reads a log while its writer holds the lock and
// appends: every snapshot opens, holds between what was durable before and
// after it, and every entry it holds reads back and decodes.
func TestSnapshotLiveLog(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	for i := range 10 {
		if _, err := l.Append(ctx, testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	appended := make(chan error, 1)
	go func() {
		for i := 10; i < 1000; i++ {
			select {
			case <-stop:
				appended <- nil
				return
			default:
			}
			if _, err := l.Append(ctx, testEntry(i)); err != nil {
				appended <- err
				return
			}
		}
		appended <- nil
	}()
	for range 10 {
		before := l.Size()
		s, err := OpenSnapshot(dir)
		if err != nil {
			t.Fatalf("snapshot of a live log: %v", err)
		}
		after := l.Size()
		n := s.Size()
		// Entries written but not yet acknowledged may be seen too.
		if n < before {
			t.Errorf("snapshot holds %d entries, the log had %d durable before it", n, before)
		}
		raws, err := s.ReadEntries(0, n)
		if err != nil {
			t.Fatalf("read back [0, %d) (log %d..%d): %v", n, before, after, err)
		}
		for i, raw := range raws {
			if _, err := DecodeEntry(raw); err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
		}
		s.Close()
	}
	close(stop)
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotChangesNothing: a missing log is an error, not created.
func TestSnapshotChangesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "log")
	if _, err := OpenSnapshot(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("snapshot of a missing log: %v, want not exist", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the snapshot created %s", dir)
	}
}
