package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const testOrigin = "rulelock.test/audit"

// testKey returns a signer and verifier for testOrigin (or name).
func testKey(t testing.TB, name string) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(nil, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func testEntry(i int) *Entry {
	return &Entry{
		Kind:          KindDecision,
		Time:          time.Date(2026, 11, 22, 10, 0, 0, i, time.UTC),
		Agent:         "agent-42",
		Session:       "s-1",
		RequestID:     fmt.Sprintf("req-%d", i),
		Action:        Text(fmt.Sprintf(`{"amount":%d,"to":"acct-9","type":"transfer"}`, i)),
		Instruction:   Text("Pay invoice 1234 from Acme"),
		Rules:         []Rule{{Name: "NoHighValueTransfers", Outcome: "deny", Message: "Transfers over $10,000 require human approval"}},
		Decision:      "deny",
		BundleDigest:  "sha256:0123",
		EngineVersion: "rulelock/0.0.0",
	}
}

// openTest opens a log with small segments (1 MiB) unless opts says otherwise.
func openTest(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	if opts.SegmentSize == 0 {
		opts.SegmentSize = 1 << 20
	}
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestAppendVerify(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, Options{SegmentSize: 100 << 10})
	s, v := testKey(t, testOrigin)
	tiles := t.TempDir()
	cp, err := NewCheckpointer(l, s, CheckpointOptions{TilesDir: tiles})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var receipts []Receipt
	for i := range 700 {
		r, err := l.Append(ctx, testEntry(i))
		if err != nil {
			t.Fatal(err)
		}
		if r.Index != int64(i) {
			t.Fatalf("index %d, want %d", r.Index, i)
		}
		receipts = append(receipts, r)
		if i == 300 || i == 555 {
			if _, err := cp.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int64{0, 1, 255, 256, 299, 699} {
		rc, err := cp.Receipt(i)
		if err != nil {
			t.Fatal(err)
		}
		e, pr, err := VerifyReceipt(rc, v)
		if err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
		if pr.Index != i || e.RequestID != fmt.Sprintf("req-%d", i) || tlog.RecordHash(pr.Entry) != receipts[i].LeafHash {
			t.Fatalf("receipt %d: got index %d request %q", i, pr.Index, e.RequestID)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := os.ReadDir(filepath.Join(dir, segDir))
	if len(segs) < 2 {
		t.Fatalf("got %d segments, want several", len(segs))
	}
	rep, err := VerifyDir(dir, v, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 700 || rep.Size != 700 || rep.Checkpoints != 3 {
		t.Fatalf("report %+v", rep)
	}
	// Reopen: cheap, and appends continue the chain.
	l = openTest(t, dir, Options{})
	if got := l.Size(); got != 700 {
		t.Fatalf("reopened size %d, want 700", got)
	}
	if _, err := l.Append(ctx, testEntry(700)); err != nil {
		t.Fatal(err)
	}
	cp, err = NewCheckpointer(l, s, CheckpointOptions{TilesDir: tiles})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := VerifyDir(dir, v, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	checkTiles(t, tiles, v, 701)
}

// checkTiles verifies the tiles directory the way a generic tlog client
// does: tlog.TileHashReader over the tiles, authenticated by the checkpoint.
func checkTiles(t *testing.T, dir string, v note.Verifier, size int64) {
	t.Helper()
	msg, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCheckpoint([]byte(n.Text))
	if err != nil {
		t.Fatal(err)
	}
	if c.Size != size {
		t.Fatalf("tiles checkpoint size %d, want %d", c.Size, size)
	}
	tr := tileFiles{dir}
	hr := tlog.TileHashReader(tlog.Tree{N: c.Size, Hash: c.Root}, tr)
	for _, i := range []int64{0, 255, 256, size - 1} {
		leaf, err := hr.ReadHashes([]int64{tlog.StoredHashIndex(0, i)})
		if err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
		bundle, err := os.ReadFile(filepath.Join(dir, TilePath(tlog.Tile{H: tileHeight, L: -1, N: i >> tileHeight, W: bundleWidth(i, size)})))
		if err != nil {
			t.Fatal(err)
		}
		e := bundleEntry(t, bundle, int(i%256))
		if tlog.RecordHash(e) != leaf[0] {
			t.Fatalf("entry %d from bundle does not match the tile leaf", i)
		}
	}
}

func bundleWidth(i, size int64) int {
	if (i>>tileHeight+1)<<tileHeight <= size {
		return 1 << tileHeight
	}
	return int(size % (1 << tileHeight))
}

func bundleEntry(t *testing.T, b []byte, k int) []byte {
	for j := 0; ; j++ {
		if len(b) < 2 {
			t.Fatal("short bundle")
		}
		n := int(b[0])<<8 | int(b[1])
		if j == k {
			return b[2 : 2+n]
		}
		b = b[2+n:]
	}
}

func TestConcurrentAppend(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, Options{SegmentSize: 256 << 10})
	const writers, each = 32, 50
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range each {
				r, err := l.Append(context.Background(), testEntry(w*each+k))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[r.Index] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range int64(writers * each) {
		if !seen[i] {
			t.Fatalf("index %d never returned", i)
		}
	}
	s, v := testKey(t, testOrigin)
	l = openTest(t, dir, Options{})
	cp, _ := NewCheckpointer(l, s, CheckpointOptions{})
	if _, err := cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	rep, err := VerifyDir(dir, v, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != writers*each {
		t.Fatalf("got %d entries, want %d", rep.Entries, writers*each)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, Options{})
	defer l.Close()
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: got %v, want ErrLocked", err)
	}
}

func TestClosed(t *testing.T) {
	l := openTest(t, t.TempDir(), Options{})
	l.Close()
	if _, err := l.Append(context.Background(), testEntry(0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
}

// TestReadEntries: reading runs of entries at once returns what ReadEntry
// returns for each, across segment boundaries, and still checks every
// frame's CRC and index.
func TestReadEntries(t *testing.T) {
	l := openTest(t, t.TempDir(), Options{SegmentSize: 100 << 10})
	defer l.Close()
	ctx := context.Background()
	const n = 700
	for i := range n {
		if _, err := l.Append(ctx, testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	if segs := l.locs[n-1].seg + 1; segs < 3 {
		t.Fatalf("the entries fill %d segments; the test wants several", segs)
	}
	for _, r := range [][2]int64{{0, n}, {0, 1}, {5, 5}, {n - 1, n}, {100, 356}, {230, 480}} {
		got, err := l.ReadEntries(r[0], r[1])
		if err != nil {
			t.Fatalf("ReadEntries%v: %v", r, err)
		}
		if len(got) != int(r[1]-r[0]) {
			t.Fatalf("ReadEntries%v: %d entries", r, len(got))
		}
		for i, b := range got {
			want, err := l.ReadEntry(r[0] + int64(i))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != string(want) {
				t.Fatalf("ReadEntries%v: entry %d differs from ReadEntry", r, r[0]+int64(i))
			}
		}
	}
	for _, r := range [][2]int64{{-1, 3}, {0, n + 1}, {5, 4}} {
		if _, err := l.ReadEntries(r[0], r[1]); err == nil {
			t.Errorf("ReadEntries%v: no error", r)
		}
	}
	// A flipped byte in the middle of a run is a checksum error.
	lc := l.locs[300]
	seg := l.segs[lc.seg]
	var b [1]byte
	off := lc.off + frameHeader + 10
	if _, err := seg.f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x20
	if _, err := seg.f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	if _, err := l.ReadEntries(l.segs[lc.seg].first, 320); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("ReadEntries over a corrupted frame: %v, want a checksum error", err)
	}
}

// TestEnqueueOrder: entries are written in the order they were queued, and
// an entry queued before Close is still written and acknowledged.
func TestEnqueueOrder(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, Options{SegmentSize: 64 << 10})
	ctx := context.Background()
	const n = 300
	var ps []Pending
	for i := range n {
		p, err := l.Enqueue(ctx, testEntry(i))
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for i, p := range ps {
		r, err := p.Wait(ctx)
		if err != nil || r.Index != int64(i) {
			t.Fatalf("entry %d: receipt %+v, %v", i, r, err)
		}
	}
	if _, err := l.Enqueue(ctx, testEntry(n)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Enqueue after Close: got %v, want ErrClosed", err)
	}
	l = openTest(t, dir, Options{})
	defer l.Close()
	for i := range int64(n) {
		raw, err := l.ReadEntry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := DecodeEntry(raw)
		if err != nil || e.RequestID != fmt.Sprintf("req-%d", i) {
			t.Fatalf("entry %d: %v %v", i, e.RequestID, err)
		}
	}
}
