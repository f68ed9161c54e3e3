package pglog

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/rulelock/rulelock/internal/pgtest"
)

// TestHandler: every file of a verified export is served at its path, with
// the same bytes, by any replica's Handler; a tile beyond the tree is 404;
// with PostgreSQL down the log is 503, never a stale or empty answer.
func TestHandler(t *testing.T) {
	c := pgtest.New(t)
	signer, verifier := keys(t)
	rep := newReplica(t, c.DSN())
	ctx := context.Background()
	appendN(t, rep.log, "x", 300)
	if _, err := integrate(ctx, dial(t, c.DSN()), signer, 1000, nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := NewReader(rep.pool).Export(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := exportAndVerify(t, rep.pool, verifier); err != nil {
		t.Fatal(err)
	}
	other := newReplica(t, c.DSN())
	srv := httptest.NewServer(http.StripPrefix("/v1/log", NewReader(other.pool).Handler()))
	defer srv.Close()
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/v1/log/" + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		want, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if code, got := get(filepath.ToSlash(rel)); code != http.StatusOK || !bytes.Equal(got, want) {
			t.Errorf("GET %s: %d, %d bytes; want 200 and the exported %d bytes", rel, code, len(got), len(want))
		}
		files++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 {
		t.Fatalf("export has %d files, want the checkpoint, 2 level-0 tiles, 2 bundles and more", files)
	}
	// Entries sequenced but not yet integrated are not in any bundle.
	appendN(t, rep.log, "y", 3)
	for _, p := range []string{"tile/0/002", "tile/entries/001.p/45", "tile/0/001.p/45", "tile/0/x", "checkpoint/"} {
		if code, _ := get(p); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, code)
		}
	}
	c.Stop()
	if code, _ := get("checkpoint"); code != http.StatusServiceUnavailable {
		t.Errorf("GET checkpoint with PostgreSQL down: %d, want 503", code)
	}
}
