package audit

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// faultFile fails writes or syncs of segment files once armed.
type faultFile struct {
	file
	fault *fault
}

type fault struct {
	armed atomic.Bool
	kind  string // "write", "sync", "enospc"
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fault.armed.Load() {
		switch f.fault.kind {
		case "write":
			return 0, syscall.EIO
		case "enospc":
			// A partial write, as a full disk gives.
			n, _ := f.file.WriteAt(p[:len(p)/2], off)
			return n, syscall.ENOSPC
		}
	}
	return f.file.WriteAt(p, off)
}

func (f *faultFile) Sync() error {
	if f.fault.armed.Load() && f.fault.kind == "sync" {
		return syscall.EIO
	}
	return f.file.Sync()
}

func TestIOFaults(t *testing.T) {
	for _, kind := range []string{"write", "sync", "enospc"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			flt := &fault{kind: kind}
			opts := Options{openFile: func(name string, flag int, perm os.FileMode) (file, error) {
				f, err := openOSFile(name, flag, perm)
				if err != nil || !strings.HasSuffix(name, ".seg") {
					return f, err
				}
				return &faultFile{f, flt}, nil
			}}
			l := openTest(t, dir, opts)
			ctx := context.Background()
			acked := map[int64][]byte{}
			for i := range 10 {
				r, err := l.Append(ctx, testEntry(i))
				if err != nil {
					t.Fatal(err)
				}
				acked[r.Index], _ = l.ReadEntry(r.Index)
			}
			flt.armed.Store(true)
			var wg sync.WaitGroup
			var failures atomic.Int32
			for i := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := l.Append(ctx, testEntry(100+i)); err != nil {
						failures.Add(1)
						return
					}
					t.Errorf("append %d acknowledged after the disk failed", i)
				}()
			}
			wg.Wait()
			if failures.Load() != 8 {
				t.Fatalf("%d of 8 appends failed, want all", failures.Load())
			}
			flt.armed.Store(false)
			// The log stays failed until reopened, even if the disk recovers.
			if _, err := l.Append(ctx, testEntry(200)); !errors.Is(err, ErrFailed) {
				t.Fatalf("append after failure: got %v, want ErrFailed", err)
			}
			if l.Err() == nil {
				t.Fatal("Err() is nil after a failure")
			}
			l.Close()
			l = openTest(t, dir, Options{})
			defer l.Close()
			for i, want := range acked {
				got, err := l.ReadEntry(i)
				if err != nil || string(got) != string(want) {
					t.Fatalf("acknowledged entry %d lost after reopen: %v", i, err)
				}
			}
			if _, err := l.Append(ctx, testEntry(300)); err != nil {
				t.Fatalf("append after reopen: %v", err)
			}
		})
	}
}

// TestFaultAcrossRollover fails the write of a batch's second part, after
// its first part went durable into the previous segment: the first part is
// acknowledged, the rest is not, and nothing is acknowledged twice.
func TestFaultAcrossRollover(t *testing.T) {
	dir := t.TempDir()
	flt := &fault{kind: "write"}
	opts := Options{SegmentSize: frameHeader + MaxEntrySize, openFile: func(name string, flag int, perm os.FileMode) (file, error) {
		f, err := openOSFile(name, flag, perm)
		if err != nil || !strings.HasSuffix(name, ".seg") || strings.HasSuffix(name, segName(0)) {
			return f, err
		}
		flt.armed.Store(true)
		return &faultFile{f, flt}, nil
	}}
	l := openTest(t, dir, opts)
	defer l.Close()
	var batch []*request
	for i := range 120 {
		req, err := l.prepare(testEntry(i))
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, req)
	}
	l.commit(batch) // as the writer goroutine would, with this batch
	ok := 0
	for i, req := range batch {
		res := <-req.done // the syncer answers what the writer handed over
		if res.err == nil {
			if ok != i {
				t.Fatalf("request %d acknowledged after a failed one", i)
			}
			ok++
		}
		if len(req.done) != 0 {
			t.Fatalf("request %d answered twice", i)
		}
	}
	if ok == 0 || ok == len(batch) {
		t.Fatalf("%d of %d acknowledged, want the first segment's share", ok, len(batch))
	}
	if l.Err() == nil {
		t.Fatal("log not failed")
	}
}
