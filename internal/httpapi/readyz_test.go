package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/internal/testenv"
	"github.com/rulelock/rulelock/policy"
)

// TestReadyzTellsTheTruth breaks checkpoint signing for real (the
// checkpoints directory stops taking files) and follows the API through
// it: /readyz stays 200 but reports the failure while entries are younger
// than log.max_unsigned, /metrics counts the failures; past it /readyz is
// 503 checkpoint_overdue and actions are refused 503 checkpoint_overdue,
// logged as refusals and never executed; once the fault clears, signing
// resumes and both are back without a restart. On main /readyz said 200
// and actions were executed with no checkpoint at all.
func TestReadyzTellsTheTruth(t *testing.T) {
	dir := t.TempDir()
	skey, _, err := note.GenerateKey(nil, "test.rulelock/log")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	pol, err := policy.FromSources([]policy.Source{{Name: "p.rules", Data: []byte(rules)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		l, err := audit.Open(filepath.Join(dir, "log"), audit.Options{SegmentSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		cp, err := audit.NewCheckpointer(l, signer, audit.CheckpointOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		var executed atomic.Int64
		ex := gateway.ExecutorFunc(func(context.Context, gateway.Execution) gateway.Outcome {
			executed.Add(1)
			return gateway.Outcome{Status: gateway.StatusOK}
		})
		gw, err := gateway.New(gateway.Config{Policy: pol, Log: l, Executors: map[string]gateway.Executor{"transfer": ex},
			Checkpoints: cp, MaxUnsigned: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		api := httpapi.New(httpapi.Config{
			Gateway: gw,
			Tokens:  []httpapi.Token{{SHA256: httpapi.HashToken("token-a"), Agent: policy.Agent{ID: "agent-a"}}},
			Log:     &httpapi.AuditLog{Log: l, Checkpointer: cp},
			Ready:   func() bool { return true },
		})
		do := func(method, path, body string) reply {
			req := httptest.NewRequest(method, path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer token-a")
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			r := reply{status: rec.Code, raw: rec.Body.String()}
			json.Unmarshal(rec.Body.Bytes(), &r.body)
			return r
		}
		metric := func(name string) string {
			for line := range strings.Lines(do("GET", "/metrics", "").raw) {
				if v, ok := strings.CutPrefix(line, name+" "); ok {
					return strings.TrimSpace(v)
				}
			}
			return ""
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go cp.Run(ctx, time.Second)
		act := func(when string) {
			t.Helper()
			n := executed.Load()
			if r := do("POST", "/v1/actions", small); r.status != 200 || executed.Load() != n+1 {
				t.Fatalf("%s: action got %d %s, want 200 and executed", when, r.status, r.raw)
			}
			if r := do("GET", "/readyz", ""); r.status != 200 {
				t.Fatalf("%s: /readyz %d %s, want 200", when, r.status, r.raw)
			}
		}

		act("signing works")
		time.Sleep(2 * time.Second)
		synctest.Wait()
		mend, how := testenv.BreakDir(t, filepath.Join(dir, "log", "checkpoints"))
		t.Logf("checkpoints directory: %s", how)
		act("signing just broke")
		time.Sleep(30 * time.Second)
		synctest.Wait()
		act("entries unsigned for 30s")
		if r := do("GET", "/readyz", ""); !strings.Contains(r.raw, `"checkpoint_signing":{"error":`) {
			t.Errorf("/readyz while signing fails within max_unsigned: %s, want the failure reported", r.raw)
		}
		if v := metric("rulelock_checkpoint_failures_total"); v == "" || v == "0" {
			t.Errorf("rulelock_checkpoint_failures_total = %q while signing fails", v)
		}
		// The wait is counted from the start of the last successful attempt
		// (an upper bound of the oldest entry's wait): the entries came 30s
		// ago, that attempt at most one interval before them.
		if v, err := strconv.ParseFloat(metric("rulelock_checkpoint_unsigned_seconds"), 64); err != nil || v < 30 || v > 31 {
			t.Errorf("rulelock_checkpoint_unsigned_seconds = %v (%v), want between 30 and 31", v, err)
		}

		time.Sleep(35 * time.Second)
		synctest.Wait()
		r := do("GET", "/readyz", "")
		if r.status != 503 || r.body["code"] != "checkpoint_overdue" || !strings.Contains(r.raw, "max_unsigned") {
			t.Fatalf("/readyz past max_unsigned: %d %s, want 503 checkpoint_overdue with the reason", r.status, r.raw)
		}
		size, n := l.Size(), executed.Load()
		for _, path := range []string{"/v1/actions", "/v1/decide"} {
			r := do("POST", path, small)
			if r.status != 503 || errCode(r) != "checkpoint_overdue" || r.body["request_id"] == nil {
				t.Fatalf("%s past max_unsigned: %d %s, want a logged 503 checkpoint_overdue", path, r.status, r.raw)
			}
		}
		if executed.Load() != n || l.Size() != size+2 {
			t.Fatalf("past max_unsigned: %d executions, %d entries; want none and the 2 refusals", executed.Load()-n, l.Size()-size)
		}
		if v := metric(`rulelock_fail_closed_total{reason="checkpoint_overdue"}`); v != "2" {
			t.Errorf("fail_closed_total{checkpoint_overdue} = %q, want 2", v)
		}

		mend()
		time.Sleep(11 * time.Second) // the retry after at most one backoff
		synctest.Wait()
		act("signing resumed")
		if r := do("GET", "/readyz", ""); strings.Contains(r.raw, "checkpoint_signing") {
			t.Errorf("/readyz after signing resumed still reports a failure: %s", r.raw)
		}
		if v := metric("rulelock_checkpoint_failing_attempts"); v != "0" {
			t.Errorf("rulelock_checkpoint_failing_attempts = %q after signing resumed, want 0", v)
		}
		cancel()
	})
}

// TestReadyzLogFailed: once the audit log has failed (its segment directory
// stopped taking files, so the next segment could not be created), every
// action gets 503 unavailable until a restart, and /readyz must say so. On
// main it answered 200.
func TestReadyzLogFailed(t *testing.T) {
	dir := t.TempDir()
	l, err := audit.Open(dir, audit.Options{SegmentSize: 1}) // the smallest segments: 64 KiB
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pol, err := policy.FromSources([]policy.Source{{Name: "p.rules", Data: []byte(rules)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Policy: pol, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	api := httpapi.New(httpapi.Config{
		Gateway: gw, Ready: func() bool { return true }, MaxBody: 1 << 20,
		Tokens: []httpapi.Token{{SHA256: httpapi.HashToken("token-a"), Agent: policy.Agent{ID: "agent-a"}}},
	})
	do := func(method, path, body string) reply {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer token-a")
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		r := reply{status: rec.Code, raw: rec.Body.String()}
		json.Unmarshal(rec.Body.Bytes(), &r.body)
		return r
	}
	if r := do("GET", "/readyz", ""); r.status != 200 {
		t.Fatalf("/readyz on a fresh log: %d %s", r.status, r.raw)
	}
	mend, _ := testenv.BreakDir(t, filepath.Join(dir, "log"))
	defer mend()
	big := `{"action": {"type": "transfer", "amount": 5, "to": "x"}, "instruction": "` + strings.Repeat("x", 2000) + `"}`
	for i := 0; i < 200 && l.Err() == nil; i++ {
		do("POST", "/v1/decide", big)
	}
	if l.Err() == nil {
		t.Fatal("no log failure after 400 KB of entries into 64 KiB segments")
	}
	if r := do("POST", "/v1/actions", small); r.status != 503 || errCode(r) != "unavailable" {
		t.Fatalf("action after the log failed: %d %s, want 503 unavailable", r.status, r.raw)
	}
	if r := do("GET", "/readyz", ""); r.status != 503 || r.body["code"] != "log_failed" {
		t.Fatalf("/readyz after the log failed: %d %s, want 503 log_failed", r.status, r.raw)
	}
}
