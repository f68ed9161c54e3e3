package audit

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/internal/testenv"
)

// lockedBuffer is a log destination read while Run writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// failingSigner is a real key whose token can be taken away: Sign fails
// while gone is set, as an HSM's does when its token is removed.
type failingSigner struct {
	note.Signer
	gone atomic.Bool
}

func (s *failingSigner) Sign(msg []byte) ([]byte, error) {
	if s.gone.Load() {
		return nil, errors.New("pkcs11: CKR_TOKEN_NOT_PRESENT")
	}
	return s.Signer.Sign(msg)
}

// TestCheckpointerSurvivesFaults breaks checkpoint signing with real faults
// while the log keeps taking entries: Run must keep retrying (never
// return), count the failures, say how long entries have gone unsigned,
// log the failure once and then only periodically, and sign again once the
// fault clears. On main, Run returned on the first error and never signed
// again.
func TestCheckpointerSurvivesFaults(t *testing.T) {
	for _, kind := range []string{"unwritable", "enospc", "signer"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := testKey(t, testOrigin)
			signer := &failingSigner{Signer: s}
			enospc := &fault{kind: "enospc"}
			opts := Options{openFile: func(name string, flag int, perm os.FileMode) (file, error) {
				f, err := openOSFile(name, flag, perm)
				if err != nil || filepath.Base(name) != hashesFile {
					return f, err
				}
				return &faultFile{f, enospc}, nil
			}}
			var logs lockedBuffer
			synctest.Test(t, func(t *testing.T) {
				l := openTest(t, dir, opts)
				defer l.Close()
				cp, err := NewCheckpointer(l, signer, CheckpointOptions{
					Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
					MaxBackoff: 10 * time.Second, ReportEvery: time.Minute,
				})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() { done <- cp.Run(ctx, time.Second) }()
				appendN := func(n int) {
					for i := range n {
						if _, err := l.Append(context.Background(), testEntry(i)); err != nil {
							t.Fatal(err)
						}
					}
				}
				appendN(3)
				time.Sleep(1500 * time.Millisecond)
				synctest.Wait()
				if st := cp.Status(); st.Err != nil || st.Size != 3 {
					t.Fatalf("before the fault: %+v, want 3 entries signed", st)
				}

				var mend func()
				switch kind {
				case "unwritable":
					var how string
					mend, how = testenv.BreakDir(t, filepath.Join(dir, checkpointDir))
					t.Logf("checkpoints directory: %s", how)
				case "enospc":
					enospc.armed.Store(true)
					mend = func() { enospc.armed.Store(false) }
				case "signer":
					signer.gone.Store(true)
					mend = func() { signer.gone.Store(false) }
				}
				appendN(2) // the log itself still takes entries
				time.Sleep(5 * time.Minute)
				synctest.Wait()

				select {
				case err := <-done:
					t.Fatalf("Run returned during the fault: %v", err)
				default:
				}
				st := cp.Status()
				if st.Err == nil || st.Failed < 10 || st.Failures != st.Failed || st.Size != 3 {
					t.Fatalf("during the fault: %+v, want a run of failures and 3 entries signed", st)
				}
				if kind == "enospc" && !errors.Is(st.Err, syscall.ENOSPC) {
					t.Errorf("error %v, want ENOSPC", st.Err)
				}
				// Backoff: 1+2+4+8 s, then every 10 s: about 33 attempts in five minutes.
				if st.Failed > 40 {
					t.Errorf("%d attempts in five minutes: backoff not applied", st.Failed)
				}
				if u := cp.Unsigned(); u < 5*time.Minute || u > 5*time.Minute+2*time.Second {
					t.Errorf("Unsigned() = %v during the fault, want about 5m (since the last good attempt)", u)
				}
				out := logs.String()
				failed, still := strings.Count(out, "checkpoint signing failed"), strings.Count(out, "still failing")
				if failed != 1 || still < 4 || still > 5 {
					t.Errorf("logged %d 'failed' and %d 'still failing' over %d attempts in 5m, want 1 and one a minute:\n%s", failed, still, st.Failed, out)
				}

				mend()
				time.Sleep(11 * time.Second) // at most one backoff
				synctest.Wait()
				st = cp.Status()
				if st.Err != nil || st.Failed != 0 || st.Size != 5 {
					t.Fatalf("after the fault cleared: %+v, want signing resumed over 5 entries", st)
				}
				if u := cp.Unsigned(); u != 0 {
					t.Errorf("Unsigned() = %v after signing resumed, want 0", u)
				}
				if !strings.Contains(logs.String(), "checkpoint signing resumed") {
					t.Errorf("no 'resumed' report:\n%s", logs.String())
				}
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("Run: %v", err)
				}
			})
			last, err := latestCheckpoint(filepath.Join(dir, checkpointDir))
			if err != nil || last.Size != 5 {
				t.Fatalf("latest checkpoint on disk: size %d, %v; want 5", last.Size, err)
			}
		})
	}
}

// blockingSigner is a real key whose Sign hangs while held, as a PKCS#11
// call can when the token goes away mid-operation.
type blockingSigner struct {
	note.Signer
	held    atomic.Bool
	release chan struct{}
}

func (s *blockingSigner) Sign(msg []byte) ([]byte, error) {
	if s.held.Load() {
		<-s.release
	}
	return s.Signer.Sign(msg)
}

// TestCheckpointerReportsHang: a signer that never returns must not make
// the checkpointer silent: Unsigned keeps growing (so the gateway refuses
// actions past max_unsigned), Status does not block, and the stuck attempt
// is logged every ReportEvery until it returns.
func TestCheckpointerReportsHang(t *testing.T) {
	dir := t.TempDir()
	s, _ := testKey(t, testOrigin)
	var logs lockedBuffer
	synctest.Test(t, func(t *testing.T) {
		// Made in the bubble: a channel from outside is not durably blocking.
		signer := &blockingSigner{Signer: s, release: make(chan struct{})}
		l := openTest(t, dir, Options{})
		defer l.Close()
		cp, err := NewCheckpointer(l, signer, CheckpointOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- cp.Run(ctx, time.Second) }()
		if _, err := l.Append(context.Background(), testEntry(0)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		signer.held.Store(true)
		if _, err := l.Append(context.Background(), testEntry(1)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3*time.Minute + time.Second)
		synctest.Wait()
		if st := cp.Status(); st.Size != 1 || st.Err != nil {
			t.Fatalf("while the signer hangs: %+v", st)
		}
		if u := cp.Unsigned(); u < 3*time.Minute {
			t.Errorf("Unsigned() = %v while the signer hangs, want over 3m", u)
		}
		if n := strings.Count(logs.String(), "checkpoint signing stuck"); n < 2 || n > 3 {
			t.Errorf("logged 'stuck' %d times in 3 minutes, want about one a minute:\n%s", n, logs.String())
		}
		signer.held.Store(false)
		close(signer.release)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if st := cp.Status(); st.Size != 2 || cp.Unsigned() != 0 {
			t.Fatalf("after the signer returned: %+v, unsigned %v; want 2 entries signed", st, cp.Unsigned())
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
