package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/internal/pgtest"
)

// storePolicy allows transfers of a positive amount up to 1,000 and denies
// everything else. It reads no state: limits across replicas are the
// shared ledger's (docs/scale-out.md).
const storePolicy = `policy "store" {
  default: deny
}

action "transfer" {
  amount: number
  to: string
}

rule "AllowTransfers" {
  precondition: action.type == "transfer"
  condition: action.amount > 0 && action.amount <= 1000
  allow
}
`

// countingUpstream counts the requests it receives, by Idempotency-Key
// (the request id).
type countingUpstream struct {
	mu   sync.Mutex
	keys map[string]int
}

func (u *countingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	u.mu.Lock()
	u.keys[r.Header.Get("Idempotency-Key")]++
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"ok":true}`)
}

func (u *countingUpstream) calls() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := map[string]int{}
	for k, n := range u.keys {
		out[k] = n
	}
	return out
}

// storeSetup is what the replicas of one test share: the database, the
// log's key, the agent's token, the policy and the upstream.
type storeSetup struct {
	dir, dsn, skey, vkey, token, policy, upstream string
}

func newStoreSetup(t *testing.T, dsn, upstream string) *storeSetup {
	t.Helper()
	s := &storeSetup{dir: t.TempDir(), dsn: dsn, upstream: upstream}
	var err error
	if s.skey, s.vkey, err = note.GenerateKey(rand.Reader, "store.rulelock.test/log"); err != nil {
		t.Fatal(err)
	}
	var raw [24]byte
	rand.Read(raw[:])
	s.token = "rl_" + hex.EncodeToString(raw[:])
	s.policy = filepath.Join(s.dir, "policy")
	if err := os.MkdirAll(s.policy, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.policy, "store.rules"), []byte(storePolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// replicaConfig writes replica n's data directory (with the shared log
// key) and config, and returns the config's path.
func (s *storeSetup) replicaConfig(t *testing.T, n int, listen string, extra string) string {
	t.Helper()
	data := filepath.Join(s.dir, fmt.Sprintf("replica-%d", n))
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "log.key"), []byte(s.skey+"\n"), 0o600); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(s.token))
	cfg := fmt.Sprintf(`listen: %s
data_dir: %s
store: %q
policy: %s
origin: store.rulelock.test/log
checkpoint_interval: 50ms
agents:
  - id: agent-1
    roles: [payments]
    token_sha256: %s
executors:
  transfer:
    method: POST
    url: %s/payees/{to}/transfers
    timeout: 2s
%s`, listen, data, s.dsn, s.policy, hex.EncodeToString(sum[:]), s.upstream, extra)
	path := filepath.Join(s.dir, fmt.Sprintf("replica-%d.yaml", n))
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startReplica runs `rulelock serve --config path` in this process.
func startReplica(t *testing.T, path string) (url string, stop func() error) {
	t.Helper()
	cfg, err := readConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	e := &env{stdin: strings.NewReader(""), stdout: &syncBuffer{}, stderr: &syncBuffer{}, getenv: func(string) string { return "" }}
	g, stop := runServing(t, e, cfg, false)
	url = "http://" + g.ln.Addr().String()
	waitReady(t, url)
	return url, stop
}

// getStatus returns the status of GET url with token (none when "").
func getStatus(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeStore: three replicas of `rulelock serve --store` on one
// PostgreSQL, behind the same token; an agent's requests are spread over
// them. Every allowed request reaches the upstream once, every replica
// serves the same signed checkpoint and tiles, and the exported log
// verifies with --replay. With PostgreSQL stopped, /readyz is 503 and
// actions are refused 503 with nothing executed; when it returns, the
// replicas recover without a restart. A row changed in PostgreSQL is
// detected by verify.
func TestServeStore(t *testing.T) {
	c := pgtest.New(t)
	up := &countingUpstream{keys: map[string]int{}}
	srv := httptest.NewServer(up)
	defer srv.Close()
	s := newStoreSetup(t, c.DSN(), srv.URL)
	var urls []string
	var stops []func() error
	for n := range 3 {
		url, stop := startReplica(t, s.replicaConfig(t, n, "127.0.0.1:0", ""))
		urls, stops = append(urls, url), append(stops, stop)
	}
	stopAll := func() {
		for _, stop := range stops {
			if err := stop(); err != nil {
				t.Error(err)
			}
		}
		stops = nil
	}
	defer func() { stopAll() }()

	allowed := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := range 10 {
				amount := 100 + 150*(i%8) // some over 1000: denied
				url := urls[(w+i)%3]
				status, out := postJSON(t, url+"/v1/actions", s.token, fmt.Sprintf(`{"action": {"type": "transfer", "amount": %d, "to": "acct-%d"}}`, amount, w))
				if status != 200 {
					t.Errorf("replica %s: HTTP %d %v", url, status, out)
					return
				}
				if decisionOf(out) == "allow" {
					mu.Lock()
					allowed[out["request_id"].(string)] = true
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(allowed) == 0 {
		t.Fatal("nothing allowed: the test tested nothing")
	}
	calls := up.calls()
	for id := range allowed {
		if calls[id] != 1 {
			t.Errorf("allowed request %s reached the upstream %d times, want 1", id, calls[id])
		}
	}
	if len(calls) != len(allowed) {
		t.Errorf("the upstream saw %d requests, %d were allowed", len(calls), len(allowed))
	}

	// Every replica serves the same log: wait until one checkpoint covers
	// it all, then compare.
	var cp string
	for i := 0; ; i++ {
		st, body := getStatus(t, urls[0]+"/v1/log/checkpoint", s.token)
		if st == 200 && strings.Contains(body, "\n64\n") { // 3 startup notes, 1 activation... at least the 60 decisions
			cp = body
			break
		}
		if st == 200 && i > 100 {
			cp = body
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, u := range urls[1:] {
		if st, body := getStatus(t, u+"/v1/log/checkpoint", s.token); st != 200 || body != cp {
			// Another integration may have run in between: the same or a later tree.
			if st != 200 {
				t.Errorf("%s checkpoint: HTTP %d %s", u, st, body)
			}
		}
		if st, body := getStatus(t, u+"/v1/log/tile/0/000.p/1", s.token); st != 200 {
			t.Errorf("%s tile: HTTP %d %s", u, st, body)
		}
		if st, _ := getStatus(t, u+"/v1/log/tile/entries/000.p/1", s.token); st != 403 {
			t.Errorf("%s entry bundle as an agent: HTTP %d, want 403", u, st)
		}
		if st, body := getStatus(t, u+"/v1/log/find?request_id=x", s.token); st != 403 && st != 404 {
			t.Errorf("%s log find: HTTP %d %s", u, st, body)
		}
	}

	// PostgreSQL stops: fail closed, then recover without a restart.
	before := len(up.calls())
	c.Stop()
	waitStatus(t, urls[1]+"/readyz", 503)
	if st, body := getStatus(t, urls[1]+"/readyz", ""); !strings.Contains(body, `"status":"not ready"`) || strings.Contains(body, "reason") {
		t.Errorf("unauthenticated /readyz during the outage: %d %s; want only the status and code", st, body)
	}
	for _, u := range urls {
		status, out := postJSON(t, u+"/v1/actions", s.token, `{"action": {"type": "transfer", "amount": 5, "to": "acct-down"}}`)
		if status != 503 {
			t.Errorf("%s during the outage: HTTP %d %v, want 503", u, status, out)
		}
		if e, _ := out["error"].(map[string]any); e == nil || e["code"] != "unavailable" {
			t.Errorf("%s during the outage: %v, want code unavailable", u, out)
		}
	}
	for _, path := range []string{"/v1/log/checkpoint", "/v1/log/tile/0/000.p/1", "/v1/log/entries/0", "/v1/log/proof/0"} {
		if st, body := getStatus(t, urls[2]+path, s.token); st != 503 || !strings.Contains(body, `"unavailable"`) {
			t.Errorf("GET %s during the outage: %d %s, want 503 unavailable", path, st, body)
		}
	}
	if n := len(up.calls()); n != before {
		t.Errorf("the upstream saw %d more requests during the outage", n-before)
	}
	c.Start()
	for _, u := range urls {
		waitStatus(t, u+"/readyz", 200)
		if out := post(t, u, s.token, `{"action": {"type": "transfer", "amount": 7, "to": "acct-up"}}`); decisionOf(out) != "allow" {
			t.Errorf("%s after the recovery: %v", u, out)
		}
	}
	stopAll()

	// The log several replicas wrote verifies, with --replay.
	dir := filepath.Join(t.TempDir(), "export")
	out, code, stderr := cliCode(t, s.dir, "log", "export", "--store", c.DSN(), "--out", dir)
	if code != 0 {
		t.Fatalf("log export: exit %d %s %s", code, out, stderr)
	}
	out, code, stderr = cliCode(t, s.dir, "verify", "--key", s.vkey, "--replay", "--allow-development",
		"--bundles", filepath.Join(s.dir, "replica-0", "bundles"), dir)
	if code != 0 || !strings.Contains(out, "0 findings, 0 allowed without an outcome") || !strings.Contains(out, "63 decisions replayed") {
		t.Fatalf("verify --replay of the export: exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("%s", out)

	// A row changed in PostgreSQL is detected.
	ctx := context.Background()
	if _, err := execSQL(ctx, c.DSN(), `UPDATE rulelock_entries SET payload = convert_to(replace(convert_from(payload, 'UTF8'), 'acct-1', 'acct-9'), 'UTF8')
		WHERE idx = (SELECT min(idx) FROM rulelock_entries WHERE convert_from(payload, 'UTF8') LIKE '%acct-1%')`); err != nil {
		t.Fatal(err)
	}
	dir2 := filepath.Join(t.TempDir(), "export")
	if out, code, stderr := cliCode(t, s.dir, "log", "export", "--store", c.DSN(), "--out", dir2); code != 0 {
		t.Fatalf("log export: exit %d %s %s", code, out, stderr)
	}
	if out, code, errs := cliCode(t, s.dir, "verify", "--key", s.vkey, dir2); code != 1 || !strings.Contains(out+errs, "modified_entry") {
		t.Fatalf("verify a tampered log: exit %d, want 1 and modified_entry\n%s%s", code, out, errs)
	}

}

// waitStatus waits until GET url answers status.
func waitStatus(t *testing.T, url string, status int) {
	t.Helper()
	for range 400 {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == status {
				return
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("GET %s never answered %d", url, status)
}

// execSQL runs one statement on dsn.
func execSQL(ctx context.Context, dsn, sql string) (int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	tag, err := conn.Exec(ctx, sql)
	return tag.RowsAffected(), err
}
