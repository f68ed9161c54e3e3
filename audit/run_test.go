package audit

import (
	"context"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"
)

// TestCheckpointerRun checks that Run signs a checkpoint each interval in
// which the tree grew, and none when it did not.
func TestCheckpointerRun(t *testing.T) {
	dir := t.TempDir()
	s, _ := testKey(t, testOrigin)
	synctest.Test(t, func(t *testing.T) {
		l := openTest(t, dir, Options{SegmentSize: 1 << 20})
		defer l.Close()
		cp, err := NewCheckpointer(l, s, CheckpointOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- cp.Run(ctx, time.Second) }()
		for i := range 3 {
			if _, err := l.Append(context.Background(), testEntry(i)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second + time.Millisecond)
			synctest.Wait()
		}
		time.Sleep(3 * time.Second) // no growth: no new checkpoints
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	seqs, err := listCheckpoints(filepath.Join(dir, checkpointDir))
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != 3 {
		t.Fatalf("%d checkpoints, want 3 (one per interval with growth)", len(seqs))
	}
}

// TestCheckpointerSignsWhenQuiet checks that Run does not leave a log that
// stopped growing unsigned until the next interval: once no entry has
// arrived for a short while, every entry is covered, long before the
// interval (an hour here) has passed. A log that keeps growing is signed
// once quiet again, not after each entry.
func TestCheckpointerSignsWhenQuiet(t *testing.T) {
	dir := t.TempDir()
	s, _ := testKey(t, testOrigin)
	synctest.Test(t, func(t *testing.T) {
		l := openTest(t, dir, Options{SegmentSize: 1 << 20})
		defer l.Close()
		cp, err := NewCheckpointer(l, s, CheckpointOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- cp.Run(ctx, time.Hour) }()
		for i := range 5 {
			if _, err := l.Append(context.Background(), testEntry(i)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond) // busier than the quiet tick
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := cp.Status().Size; got != 5 {
			t.Errorf("after a quiet second, the signed size is %d, want 5", got)
		}
		if got := cp.Unsigned(); got != 0 {
			t.Errorf("Unsigned() = %v, want 0", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	seqs, err := listCheckpoints(filepath.Join(dir, checkpointDir))
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != 1 {
		t.Errorf("%d checkpoints, want 1 (the log grew, then went quiet once)", len(seqs))
	}
}
