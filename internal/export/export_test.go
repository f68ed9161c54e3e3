package export_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/export"
)

// appendNotes appends n note entries to l.
func appendNotes(t testing.TB, l *audit.Log, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		e := &audit.Entry{Kind: audit.KindNote, Time: time.Now(), Message: fmt.Sprintf("note %d", l.Size())}
		if _, err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
}

func liveSource(l *audit.Log) func(int64) (export.Source, error) { return export.Live(l) }

// checkStream checks lines as a receiver got them: each index at most one
// past the largest seen so far (in order, no gap), every entry of
// [0, want) there, each leaf hash matching its entry and the log's.
// It returns how many lines were duplicates.
func checkStream(t *testing.T, data []byte, want int64, log export.Source) (dups int) {
	t.Helper()
	next := int64(0) // the next index not yet seen
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l export.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Bytes(), err)
		}
		if err := l.Check(); err != nil {
			t.Fatal(err)
		}
		switch {
		case l.Index > next:
			t.Fatalf("entry %d arrived before entry %d", l.Index, next)
		case l.Index < next:
			dups++
		default:
			next++
		}
		e, err := log.ReadEntries(l.Index, l.Index+1)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(e[0], l.Entry) {
			t.Fatalf("entry %d: got %s, the log holds %s", l.Index, l.Entry, e[0])
		}
	}
	if next != want {
		t.Fatalf("got entries [0, %d), want [0, %d)", next, want)
	}
	return dups
}

// flakyReceiver is a real HTTP receiver that fails a share of the posts
// (500, or a reply after the exporter gave up waiting) and keeps what it
// acknowledged.
type flakyReceiver struct {
	mu      sync.Mutex
	got     bytes.Buffer
	posts   int
	failed  int
	rnd     *rand.Rand
	failPct int
}

func (r *flakyReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.posts++
	if req.Header.Get("Content-Type") != "application/x-ndjson" || req.Header.Get("Rulelock-First-Index") == "" {
		http.Error(w, "bad headers", 400)
		return
	}
	if r.rnd.IntN(100) < r.failPct {
		r.failed++
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	r.got.Write(body)
}

func (r *flakyReceiver) snapshot() ([]byte, int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.got.Bytes()), r.posts, r.failed
}

func TestExportHTTPFlakyReceiverWhileLogGrows(t *testing.T) {
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendNotes(t, l, 300)
	rcv := &flakyReceiver{rnd: rand.New(rand.NewPCG(1, 2)), failPct: 30}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	cursor := filepath.Join(t.TempDir(), "cursor")
	x, err := export.New(export.Options{Open: liveSource(l), Sink: &export.HTTP{URL: srv.URL}, Cursor: cursor,
		BatchSize: 17, Poll: time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Run(ctx) }()
	appendNotes(t, l, 700) // while it exports
	want := l.Size()
	waitFor(t, func() bool { return x.Stats().Exported == want })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got, posts, failed := rcv.snapshot()
	if failed == 0 {
		t.Fatalf("the receiver failed none of %d posts: the test proves nothing about retries", posts)
	}
	if dups := checkStream(t, got, want, l); dups != 0 {
		t.Errorf("%d duplicates from a receiver that never acknowledged what it did not keep", dups)
	}
	st := x.Stats()
	if st.Failures != int64(failed) || st.Lag() != 0 {
		t.Errorf("stats %+v, want %d failures and no lag", st, failed)
	}
	c, err := export.ReadCursor(cursor)
	if err != nil || c.Next != want {
		t.Errorf("cursor %+v, %v; want next %d", c, err, want)
	}
}

func TestExportResumesFromCursor(t *testing.T) {
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	out := filepath.Join(t.TempDir(), "out.jsonl")
	cursor := filepath.Join(t.TempDir(), "cursor")
	run := func() {
		sink := &export.File{Path: out}
		defer sink.Close()
		x, err := export.New(export.Options{Open: liveSource(l), Sink: sink, Cursor: cursor, BatchSize: 7, Poll: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		want := l.Size()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- x.Run(ctx) }()
		waitFor(t, func() bool { return x.Stats().Exported == want })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	appendNotes(t, l, 50)
	run()
	appendNotes(t, l, 30)
	// A batch a crash cut short: half a line after the last complete one.
	f, err := os.OpenFile(out, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"index":50,"leaf_ha`)
	f.Close()
	run()
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if dups := checkStream(t, data, 80, l); dups != 0 {
		t.Errorf("%d duplicates after a clean stop", dups)
	}
}

func TestExportRefusesAnotherLogsCursor(t *testing.T) {
	cursor := filepath.Join(t.TempDir(), "cursor")
	export1 := func(l *audit.Log, refused bool) error {
		x, err := export.New(export.Options{Open: liveSource(l), Sink: &export.File{Path: filepath.Join(t.TempDir(), "out")}, Cursor: cursor, Poll: time.Millisecond})
		if err != nil {
			return err
		}
		if refused {
			// Run must return the refusal by itself (a hang fails the test).
			return x.Run(context.Background())
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- x.Run(ctx) }()
		waitFor(t, func() bool { return x.Stats().Exported == l.Size() })
		cancel()
		return <-done
	}
	a, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	appendNotes(t, a, 5)
	if err := export1(a, false); err != nil {
		t.Fatal(err)
	}
	b, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	appendNotes(t, b, 8)
	if err := export1(b, true); !errors.Is(err, export.ErrOtherLog) {
		t.Errorf("exporting another log from the cursor: got %v, want a refusal", err)
	}
	c, _ := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	defer c.Close()
	appendNotes(t, c, 2)
	if err := export1(c, true); !errors.Is(err, export.ErrOtherLog) || !strings.Contains(err.Error(), "rolled back") {
		t.Errorf("exporting a shorter log from the cursor: got %v, want a refusal", err)
	}
}

func TestExportHalvesBatchOn413(t *testing.T) {
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendNotes(t, l, 40)
	var mu sync.Mutex
	var got bytes.Buffer
	var sizes []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		n := r.Header.Get("Rulelock-Entries")
		sizes = append(sizes, n)
		if len(n) > 1 { // ten entries or more: too large
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		io.Copy(&got, r.Body)
	}))
	defer srv.Close()
	x, err := export.New(export.Options{Open: liveSource(l), Sink: &export.HTTP{URL: srv.URL}, Cursor: filepath.Join(t.TempDir(), "c"),
		BatchSize: 40, Poll: time.Millisecond, MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Run(ctx) }()
	waitFor(t, func() bool { return x.Stats().Exported == 40 })
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	checkStream(t, got.Bytes(), 40, l)
	if sizes[0] != "40" || sizes[1] != "20" || sizes[2] != "10" || sizes[3] != "5" {
		t.Errorf("batch sizes %v, want 40, 20, 10, 5, ...", sizes)
	}
}

// waitFor polls cond; the test's own timeout bounds it.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for !cond() {
		time.Sleep(time.Millisecond)
	}
}

// A log that cannot be opened for a while (a transient error) is retried,
// not given up on.
func TestExportRetriesOpen(t *testing.T) {
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendNotes(t, l, 10)
	opens := 0
	open := func(next int64) (export.Source, error) {
		if opens++; opens <= 3 {
			return nil, errors.New("too many open files")
		}
		return export.Live(l)(next)
	}
	out := filepath.Join(t.TempDir(), "out")
	sink := &export.File{Path: out}
	defer sink.Close()
	x, err := export.New(export.Options{Open: open, Sink: sink, Cursor: filepath.Join(t.TempDir(), "c"), MinBackoff: time.Millisecond, StopAtEnd: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(out)
	checkStream(t, data, 10, l)
	if st := x.Stats(); st.Failures != 3 {
		t.Errorf("%d failures, want 3", st.Failures)
	}
}
