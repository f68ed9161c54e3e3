// Package interop runs rulelock's witness client and checkpointer against
// transparency-dev/witness, the reference C2SP tlog-witness, in process. It
// is its own module so that the witness's dependencies (Google Cloud,
// Spanner, gRPC, OpenTelemetry, SQLite) stay out of rulelock's module
// graph: run it with `cd internal/witness/testdata/interop && go test .`.
package interop

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/witness/config"
	"github.com/transparency-dev/witness/persistence/inmemory"
	txwitness "github.com/transparency-dev/witness/witness"
	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/witness"
)

const origin = "rulelock.test/interop"

// startReference starts transparency-dev/witness for the log key v and
// returns its URL and cosignature vkey.
func startReference(t *testing.T, name string, logVkey string, v note.Verifier) (string, string) {
	t.Helper()
	skey, vkey, err := witness.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	p := inmemory.New()
	ctx := context.Background()
	if err := p.AddLogs(ctx, []config.Log{{VKey: logVkey, Verifier: v, Origin: origin}}); err != nil {
		t.Fatal(err)
	}
	w, err := txwitness.New(ctx, txwitness.Opts{
		Persistence: p,
		Signers:     []note.Signer{signer},
		VerifierForLog: func(ctx context.Context, o string) (note.Verifier, bool, error) {
			return v, o == origin, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /add-checkpoint", txwitness.NewHTTPHandler(w).AddCheckpoint)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, vkey
}

func TestReferenceWitness(t *testing.T) {
	skey, logVkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(logVkey)
	url, wvkey := startReference(t, "reference.test/w1", logVkey, v)
	key, err := audit.ParseCosignerKey(wvkey)
	if err != nil {
		t.Fatal(err)
	}
	open := func(tag string) (*audit.Log, *audit.Checkpointer) {
		dir := t.TempDir()
		l, err := audit.Open(filepath.Join(dir, "log"), audit.Options{SegmentSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		cp, err := audit.NewCheckpointer(l, s, audit.CheckpointOptions{
			Witnesses: []audit.CheckpointWitness{{Key: key, Witness: &witness.Client{URL: url}}}})
		if err != nil {
			t.Fatal(err)
		}
		return l, cp
	}
	grow := func(l *audit.Log, n int, tag string) {
		for i := range n {
			if _, err := l.Append(context.Background(), &audit.Entry{Kind: audit.KindNote, Time: time.Unix(0, 0).UTC(), Message: fmt.Sprint(tag, i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	l, cp := open("honest")
	grow(l, 5, "honest")
	if _, err := cp.Checkpoint(); err != nil {
		t.Fatalf("first checkpoint: %v", err)
	}
	grow(l, 300, "honest")
	msg, err := cp.Checkpoint()
	if err != nil {
		t.Fatalf("second checkpoint, with a consistency proof: %v", err)
	}
	pol, err := audit.ParseWitnessPolicy("policy", fmt.Appendf(nil, "log %s\nwitness w1 %s\nquorum w1\n", logVkey, wvkey))
	if err != nil {
		t.Fatal(err)
	}
	if err := pol.Check(msg, "checkpoint"); err != nil {
		t.Fatalf("the reference witness's cosignature: %v\n%s", err, msg)
	}
	if n := bytes.Count(msg, []byte("\n— ")); n != 2 {
		t.Errorf("%d signatures, want the log's and the witness's:\n%s", n, msg)
	}
	// A fork of the same size and a larger one: both refused.
	for _, n := range []int{305, 310} {
		fl, fcp := open("fork")
		grow(fl, n, "fork")
		if _, err := fcp.Checkpoint(); !errors.Is(err, audit.ErrWitnessConflict) {
			t.Errorf("fork of %d: got %v, want a witness conflict", n, err)
		}
	}
	// A rollback: smaller than what the witness cosigned.
	rl, rcp := open("rolled back")
	grow(rl, 5, "honest")
	if _, err := rcp.Checkpoint(); !errors.Is(err, audit.ErrWitnessConflict) {
		t.Errorf("rolled back to 5: got %v, want a witness conflict", err)
	}
}
