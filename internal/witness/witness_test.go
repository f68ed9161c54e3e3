package witness

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
)

const origin = "rulelock.test/log"

// logKey returns a log signer and verifier and the verifier key text.
func logKey(t testing.TB) (note.Signer, note.Verifier, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
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
	return s, v, vkey
}

// testWitness is a real witness (Server) behind an httptest server.
type testWitness struct {
	name, vkey string
	key        note.Verifier
	srv        *httptest.Server
	dir        string

	mu   sync.Mutex
	olds []int64 // the old sizes of the requests it got
}

func startWitness(t testing.TB, name string, logs ...note.Verifier) *testWitness {
	t.Helper()
	skey, vkey, err := GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCosigner(skey, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &testWitness{name: name, vkey: vkey, dir: t.TempDir()}
	if w.key, err = audit.ParseCosignerKey(vkey); err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(c, logs, w.dir)
	if err != nil {
		t.Fatal(err)
	}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var old int64
		fmt.Sscanf(string(body), "old %d\n", &old)
		w.mu.Lock()
		w.olds = append(w.olds, old)
		w.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		srv.ServeHTTP(rw, r)
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *testWitness) requests() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int64(nil), w.olds...)
}

func (w *testWitness) checkpointWitness() audit.CheckpointWitness {
	return audit.CheckpointWitness{Key: w.key, Witness: &Client{URL: w.srv.URL, HTTP: w.srv.Client()}}
}

// testLog is a log with a checkpointer sending to witnesses.
type testLog struct {
	dir, tiles string
	log        *audit.Log
	cp         *audit.Checkpointer
}

func openLog(t testing.TB, dir string, s note.Signer, quorum int, ws ...*testWitness) *testLog {
	t.Helper()
	l, err := audit.Open(filepath.Join(dir, "log"), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	opts := audit.CheckpointOptions{TilesDir: filepath.Join(dir, "tiles"), WitnessQuorum: quorum}
	for _, w := range ws {
		opts.Witnesses = append(opts.Witnesses, w.checkpointWitness())
	}
	cp, err := audit.NewCheckpointer(l, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return &testLog{dir: dir, tiles: opts.TilesDir, log: l, cp: cp}
}

func (l *testLog) append(t testing.TB, n int, tag string) {
	t.Helper()
	for i := range n {
		e := &audit.Entry{Kind: audit.KindNote, Time: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Message: fmt.Sprintf("%s %d", tag, i)}
		if _, err := l.log.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
}

func policy(t testing.TB, logVkey, quorum string, ws ...*testWitness) *audit.WitnessPolicy {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "log %s\n", logVkey)
	for _, w := range ws {
		fmt.Fprintf(&b, "witness %s %s %s\n", w.name[strings.LastIndex(w.name, "/")+1:], w.vkey, w.srv.URL)
	}
	b.WriteString(quorum + "\n")
	p, err := audit.ParseWitnessPolicy("policy", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCosignedCheckpoints(t *testing.T) {
	s, v, vkey := logKey(t)
	ws := []*testWitness{startWitness(t, "w.example/a", v), startWitness(t, "w.example/b", v), startWitness(t, "w.example/c", v)}
	l := openLog(t, t.TempDir(), s, 2, ws...)
	l.append(t, 5, "first")
	if _, err := l.cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	l.append(t, 300, "second") // across a tile boundary: a real proof
	msg, err := l.cp.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if got, want := w.requests(), []int64{0, 5}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s got old sizes %v, want %v", w.name, got, want)
		}
	}
	// The published checkpoint carries the log's signature and three
	// cosignatures, everywhere it is served.
	if n := bytes.Count(msg, []byte("\n— ")); n != 4 {
		t.Errorf("checkpoint has %d signatures, want 4:\n%s", n, msg)
	}
	tiles, err := os.ReadFile(filepath.Join(l.tiles, "checkpoint"))
	if err != nil || !bytes.Equal(tiles, msg) {
		t.Errorf("tiles' checkpoint differs from the cosigned one (%v):\n%s", err, tiles)
	}
	if !bytes.Equal(l.cp.Latest(), msg) {
		t.Error("Latest is not the cosigned checkpoint")
	}
	all := policy(t, vkey, "group all all a b c\nquorum all", ws...)
	if _, err := audit.VerifyDir(filepath.Join(l.dir, "log"), v, audit.VerifyOptions{Witnesses: all}); err != nil {
		t.Errorf("verify the log with 3 of 3: %v", err)
	}
	if _, err := audit.VerifyTiles(l.tiles, v, audit.VerifyOptions{Witnesses: all}); err != nil {
		t.Errorf("verify the tiles with 3 of 3: %v", err)
	}
	r, err := l.cp.Receipt(7)
	if err != nil {
		t.Fatal(err)
	}
	_, pr, err := audit.VerifyReceipt(r, v)
	if err != nil {
		t.Fatal(err)
	}
	if err := all.Check(pr.Checkpoint, "receipt"); err != nil {
		t.Errorf("the receipt's checkpoint: %v", err)
	}
	// The witnesses kept the checkpoint they cosigned, on disk.
	for _, w := range ws {
		b, err := os.ReadFile(filepath.Join(w.dir, originHash(origin)))
		if err != nil {
			t.Fatal(err)
		}
		n, err := note.Open(b, note.VerifierList(v, w.key))
		if err != nil || len(n.Sigs) != 2 || !strings.Contains(n.Text, "\n305\n") {
			t.Errorf("%s's state is not the cosigned checkpoint of 305 (%v):\n%s", w.name, err, b)
		}
	}
}

func TestQuorum(t *testing.T) {
	s, v, vkey := logKey(t)
	ws := []*testWitness{startWitness(t, "w.example/a", v), startWitness(t, "w.example/b", v), startWitness(t, "w.example/c", v)}
	ws[2].srv.Close() // one witness down
	l := openLog(t, t.TempDir(), s, 2, ws...)
	l.append(t, 3, "x")
	msg, err := l.cp.Checkpoint()
	if err != nil {
		t.Fatalf("2 of 3 up, quorum 2: %v", err)
	}
	if n := bytes.Count(msg, []byte("\n— ")); n != 3 {
		t.Errorf("checkpoint has %d signatures, want the log's and 2 cosignatures", n)
	}
	k := policy(t, vkey, "group g 2 a b c\nquorum g", ws...)
	if err := k.Check(msg, "cp"); err != nil {
		t.Errorf("2-of-3 policy: %v", err)
	}
	// verify requires k of n: one more than there are fails.
	all := policy(t, vkey, "group g all a b c\nquorum g", ws...)
	_, err = audit.VerifyDir(filepath.Join(l.dir, "log"), v, audit.VerifyOptions{Witnesses: all})
	var ve *audit.VerifyError
	if !errors.As(err, &ve) || ve.Class != audit.Unwitnessed {
		t.Errorf("3-of-3 policy on 2 cosignatures: got %v, want unwitnessed", err)
	}
	// With all three required, nothing is published, and it is not a
	// conflict: the next checkpoint may succeed. (The same entries: a
	// second log with others would be a fork, and the witnesses say so.)
	l2 := openLog(t, t.TempDir(), s, 3, ws...)
	l2.append(t, 3, "x")
	if _, err := l2.cp.Checkpoint(); err == nil || errors.Is(err, audit.ErrWitnessConflict) {
		t.Fatalf("quorum 3 with a witness down: got %v, want a plain error", err)
	}
	if l2.cp.Latest() != nil {
		t.Error("a checkpoint short of its quorum was published")
	}
	if l2.cp.WitnessConflict() != nil {
		t.Error("a witness down is taken for a conflict")
	}
}

// TestForkRefused: a second tree of the same size, signed with the log's
// key, is refused its cosignature, and its gateway stops publishing.
func TestForkRefused(t *testing.T) {
	s, v, _ := logKey(t)
	w := startWitness(t, "w.example/a", v)
	honest := openLog(t, t.TempDir(), s, 0, w)
	honest.append(t, 5, "honest")
	if _, err := honest.cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{5, 8} { // same size, and a larger diverging tree
		fork := openLog(t, t.TempDir(), s, 0, w)
		fork.append(t, n, "fork")
		_, err := fork.cp.Checkpoint()
		if !errors.Is(err, audit.ErrWitnessConflict) {
			t.Fatalf("fork of %d: got %v, want a witness conflict", n, err)
		}
		if fork.cp.Latest() != nil {
			t.Errorf("fork of %d: a refused checkpoint was published", n)
		}
		if _, err := os.Stat(filepath.Join(fork.tiles, "checkpoint")); err == nil {
			t.Errorf("fork of %d: a refused checkpoint was exported", n)
		}
		// It stays stopped.
		fork.append(t, 1, "more")
		if _, err := fork.cp.Checkpoint(); !errors.Is(err, audit.ErrWitnessConflict) {
			t.Errorf("fork of %d, next checkpoint: got %v, want the conflict again", n, err)
		}
		if fork.cp.WitnessConflict() == nil {
			t.Errorf("fork of %d: WitnessConflict is nil", n)
		}
	}
	// The honest log goes on.
	honest.append(t, 2, "honest more")
	if _, err := honest.cp.Checkpoint(); err != nil {
		t.Fatalf("honest log after the forks: %v", err)
	}
}

// TestRolledBackRestart: a gateway restarted on a copy of its log taken
// earlier is stopped by the witness, which cosigned a larger tree. A
// restart on the real log resumes from the size its last checkpoint's
// cosignature records, without a 409.
func TestRolledBackRestart(t *testing.T) {
	s, v, _ := logKey(t)
	w := startWitness(t, "w.example/a", v)
	dir, backup := t.TempDir(), t.TempDir()
	l := openLog(t, dir, s, 0, w)
	l.append(t, 5, "a")
	if _, err := l.cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	l.log.Close()
	if err := exec.Command("cp", "-a", dir+"/.", backup).Run(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, s, 0, w)
	l.append(t, 5, "b")
	if _, err := l.cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	l.log.Close()

	// Restart on the real log: the first request says old 10.
	before := len(w.requests())
	l = openLog(t, dir, s, 0, w)
	l.append(t, 1, "c")
	if _, err := l.cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if got := w.requests()[before:]; fmt.Sprint(got) != "[10]" {
		t.Errorf("restart: old sizes %v, want [10] (the persisted witnessed size)", got)
	}
	l.log.Close()

	// Restart on the backup (5 entries) and append up to the size the
	// witness saw and beyond: refused every time.
	for _, grow := range []int{1, 6, 9} {
		d := t.TempDir()
		if err := exec.Command("cp", "-a", backup+"/.", d).Run(); err != nil {
			t.Fatal(err)
		}
		rb := openLog(t, d, s, 0, w)
		rb.append(t, grow, "rolled back")
		_, err := rb.cp.Checkpoint()
		if !errors.Is(err, audit.ErrWitnessConflict) {
			t.Fatalf("rolled back to 5, %d appended: got %v, want a witness conflict", grow, err)
		}
		if grow == 1 && !strings.Contains(err.Error(), "size 11, this log has 6 entries") {
			t.Errorf("the conflict does not say what the witness saw: %v", err)
		}
		if got := rb.cp.Latest(); !bytes.Contains(got, []byte("\n5\n")) {
			t.Errorf("the rolled-back log published past its old checkpoint:\n%s", got)
		}
	}
}

// TestServerProtocol checks the witness's answers against C2SP
// tlog-witness, request by request.
func TestServerProtocol(t *testing.T) {
	s, v, _ := logKey(t)
	w := startWitness(t, "w.example/a", v)
	other, _, _ := logKey(t)
	stranger, err := note.NewSigner(mustKey(t, "other.example/log"))
	if err != nil {
		t.Fatal(err)
	}
	sign := func(signer note.Signer, size int64, root tlog.Hash) []byte {
		msg, err := note.Sign(&note.Note{Text: string(audit.Checkpoint{Origin: signer.Name(), Size: size, Root: root}.Text())}, signer)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	// A real tree of 5 and 8.
	l := openLog(t, t.TempDir(), s, 0)
	l.append(t, 8, "x")
	root := func(n int64) tlog.Hash {
		h, err := l.log.TreeHash(n)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	proof, err := l.log.ConsistencyProof(5, 8)
	if err != nil {
		t.Fatal(err)
	}
	post := func(body string) (int, string, string) {
		resp, err := http.Post(w.srv.URL+"/add-checkpoint", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	req := func(old int64, p tlog.TreeProof, msg []byte) string {
		var b strings.Builder
		fmt.Fprintf(&b, "old %d\n", old)
		for _, h := range p {
			b.WriteString(h.String() + "\n")
		}
		return b.String() + "\n" + string(msg)
	}
	cp5, cp8 := sign(s, 5, root(5)), sign(s, 8, root(8))
	for _, tc := range []struct {
		name   string
		body   string
		status int
		reply  string
	}{
		{"unknown origin", req(0, nil, sign(stranger, 5, root(5))), 404, ""},
		{"not signed by the log's key", req(0, nil, sign(other, 5, root(5))), 403, ""},
		{"old size not canonical", "old 05\n\n" + string(cp5), 400, ""},
		{"old size beyond the checkpoint", req(9, nil, cp8), 400, ""},
		{"empty tree with a root", req(0, nil, sign(s, 0, tlog.Hash{1})), 422, ""},
		{"a proof from the empty tree", req(0, proof, cp5), 422, ""},
		{"first checkpoint", req(0, nil, cp5), 200, "— w.example/a "},
		{"old size not the one cosigned", req(0, nil, cp8), 409, "5\n"},
		{"bad consistency proof", req(5, proof[1:], cp8), 422, ""},
		{"same size, other root", req(5, nil, sign(s, 5, tlog.Hash{7})), 422, ""},
		{"consistent", req(5, proof, cp8), 200, "— w.example/a "},
		{"rolled back", req(8, nil, cp5), 400, ""},
	} {
		status, ctype, reply := post(tc.body)
		if status != tc.status || !strings.HasPrefix(reply, tc.reply) {
			t.Errorf("%s: got %d %q, want %d %q...", tc.name, status, reply, tc.status, tc.reply)
		}
		if status == 409 && ctype != "text/x.tlog.size" {
			t.Errorf("%s: Content-Type %q, want text/x.tlog.size", tc.name, ctype)
		}
	}
	// The monitoring API serves the latest cosigned checkpoint.
	resp, err := http.Get(w.srv.URL + "/" + originHash(origin) + "/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, err := note.Open(b, note.VerifierList(v, w.key)); err != nil || !bytes.Contains(b, []byte("\n8\n")) {
		t.Errorf("monitoring checkpoint: %v\n%s", err, b)
	}
}

func mustKey(t *testing.T, name string) string {
	skey, _, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	return skey
}

// TestClientReplies maps the protocol's statuses to the errors the
// checkpointer branches on.
func TestClientReplies(t *testing.T) {
	var ce *audit.WitnessConflictError
	if _, err := reply(409, []byte("12\n")); !errors.As(err, &ce) || ce.Size != 12 {
		t.Errorf("409: got %v, want a conflict at 12", err)
	}
	if _, err := reply(409, []byte("012\n")); err == nil || errors.As(err, &ce) {
		t.Errorf("409 with a malformed size: got %v, want a plain error", err)
	}
	if _, err := reply(422, []byte("no")); !errors.Is(err, audit.ErrWitnessInconsistent) {
		t.Errorf("422: got %v, want ErrWitnessInconsistent", err)
	}
	for _, st := range []int{403, 404, 500} {
		if _, err := reply(st, nil); err == nil || errors.Is(err, audit.ErrWitnessInconsistent) || errors.As(err, &ce) {
			t.Errorf("%d: got %v, want a plain error", st, err)
		}
	}
}

// TestTimeout: a witness that does not answer costs the checkpoint, not the
// gateway, and is no conflict.
func TestTimeout(t *testing.T) {
	s, _, _ := logKey(t)
	stuck := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-stuck }))
	defer srv.Close()
	defer close(stuck)
	_, vkey, _ := GenerateKey(rand.Reader, "w.example/slow")
	key, _ := audit.ParseCosignerKey(vkey)
	l, err := audit.Open(t.TempDir(), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cp, err := audit.NewCheckpointer(l, s, audit.CheckpointOptions{WitnessTimeout: time.Millisecond,
		Witnesses: []audit.CheckpointWitness{{Key: key, Witness: &Client{URL: srv.URL}}}})
	if err != nil {
		t.Fatal(err)
	}
	l.Append(context.Background(), &audit.Entry{Kind: audit.KindNote, Time: time.Unix(0, 0).UTC(), Message: "x"})
	_, err = cp.Checkpoint()
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, audit.ErrWitnessConflict) {
		t.Errorf("got %v, want a deadline error and no conflict", err)
	}
}

// FuzzAddCheckpointBody: a request body the witness accepts is exactly
// what the client would send for it.
func FuzzAddCheckpointBody(f *testing.F) {
	f.Add([]byte("old 5\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\nexample.com/log\n8\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n— example.com/log AAAA\n"))
	f.Add([]byte("old 0\n\nx\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseRequest(body)
		if err != nil {
			return
		}
		var b bytes.Buffer
		fmt.Fprintf(&b, "old %s\n", formatSize(req.old))
		for _, h := range req.proof {
			b.WriteString(h.String() + "\n")
		}
		b.WriteString("\n")
		b.Write(req.note)
		if !bytes.Equal(b.Bytes(), body) {
			t.Fatalf("parse→format: %q → %q", body, b.Bytes())
		}
	})
}

// TestCosignedWithAttestedKey: a checkpoint that carries a second
// signature (the attested per-boot key, audit.CheckpointOptions.Cosigners)
// is cosigned by real witnesses like any other, and verifies against the
// witness policy, the log's key and the per-boot key.
func TestCosignedWithAttestedKey(t *testing.T) {
	s, v, vkey := logKey(t)
	bootKey, bootVkey, err := note.GenerateKey(rand.Reader, origin+"/boot")
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := note.NewSigner(bootKey)
	bootV, _ := note.NewVerifier(bootVkey)
	ws := []*testWitness{startWitness(t, "w.example/a", v), startWitness(t, "w.example/b", v)}
	dir := t.TempDir()
	l, err := audit.Open(filepath.Join(dir, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	opts := audit.CheckpointOptions{Cosigners: []note.Signer{boot}}
	for _, w := range ws {
		opts.Witnesses = append(opts.Witnesses, w.checkpointWitness())
	}
	cp, err := audit.NewCheckpointer(l, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	tl := &testLog{dir: dir, log: l, cp: cp}
	for _, n := range []int{3, 4} {
		tl.append(t, n, "x")
		if _, err := cp.Checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	msg := cp.Latest()
	if n := bytes.Count(msg, []byte("\n— ")); n != 4 {
		t.Errorf("checkpoint has %d signatures, want the log's, the per-boot key's and 2 cosignatures:\n%s", n, msg)
	}
	for _, key := range []note.Verifier{v, bootV, ws[0].key, ws[1].key} {
		if _, err := note.Open(msg, note.VerifierList(key)); err != nil {
			t.Errorf("not signed by %s: %v", key.Name(), err)
		}
	}
	all := policy(t, vkey, "group all all a b\nquorum all", ws...)
	if _, err := audit.VerifyDir(filepath.Join(dir, "log"), v, audit.VerifyOptions{Witnesses: all}); err != nil {
		t.Errorf("verify with the witness policy: %v", err)
	}
}
