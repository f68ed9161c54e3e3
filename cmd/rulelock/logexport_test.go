package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/pglog"
	"github.com/rulelock/rulelock/internal/pgtest"
)

// TestLogExportVerify: three replicas append to one log in PostgreSQL;
// `rulelock log export` writes it out and the unchanged `rulelock verify`
// accepts it; after an entry's bytes are changed in SQL, the export of the
// same log fails verification as modified_entry.
func TestLogExportVerify(t *testing.T) {
	c := pgtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	skey, vkey, err := note.GenerateKey(rand.Reader, "rulelock.test/export")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(c.DSN())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var logs []*pglog.Log
	for range 3 {
		pool, err := pglog.Connect(ctx, c.DSN())
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		l, err := pglog.Open(ctx, pool, pglog.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		logs = append(logs, l)
		in := pglog.NewIntegrator(cfg, signer, pglog.IntegratorOptions{Interval: 10 * time.Millisecond})
		wg.Add(1)
		go func() { defer wg.Done(); in.Run(ctx) }()
	}
	defer wg.Wait()
	defer cancel()
	var aw sync.WaitGroup
	for r, l := range logs {
		aw.Add(1)
		go func() {
			defer aw.Done()
			for i := range 100 {
				e := &audit.Entry{Kind: audit.KindNote, Time: time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC), Message: fmt.Sprintf("replica %d entry %d", r, i)}
				if _, err := l.Append(ctx, e); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	aw.Wait()
	pool, err := pglog.Connect(ctx, c.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for {
		var n int64
		if err := pool.QueryRow(ctx, "SELECT size FROM rulelock_checkpoint").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 300 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}

	cli := func(args ...string) (int, string) {
		var out bytes.Buffer
		code := run(ctx, &env{stdin: strings.NewReader(""), stdout: &out, stderr: &out, getenv: func(string) string { return "" }}, args)
		return code, out.String()
	}
	dir := filepath.Join(t.TempDir(), "tiles")
	if code, out := cli("log", "export", "--store", c.DSN(), "--out", dir); code != 0 {
		t.Fatalf("log export: exit %d\n%s", code, out)
	}
	if code, out := cli("verify", "--key", vkey, dir); code != 0 || !strings.Contains(out, "300") {
		t.Fatalf("verify the export: exit %d\n%s", code, out)
	}

	if _, err := pool.Exec(ctx, `UPDATE rulelock_entries SET payload = convert_to(replace(convert_from(payload, 'UTF8'), 'entry', 'ENTRY'), 'UTF8') WHERE idx = 123`); err != nil {
		t.Fatal(err)
	}
	dir2 := filepath.Join(t.TempDir(), "tiles")
	if code, out := cli("log", "export", "--store", c.DSN(), "--out", dir2); code != 0 {
		t.Fatalf("log export: exit %d\n%s", code, out)
	}
	if code, out := cli("verify", "--key", vkey, dir2); code != 1 || !strings.Contains(out, "modified_entry") {
		t.Fatalf("verify the export of a tampered log: exit %d, want 1 and modified_entry\n%s", code, out)
	}
}
