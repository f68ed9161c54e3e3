package httpapi_test

import (
	"encoding/json"
	"io/fs"
	"maps"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/policy"
)

// TestLogAccessByRole: agent B reads none of agent A's entries, by any
// route that returns an entry's content (the entry, its receipt, the
// entry bundles), and is answered for them exactly as for an entry that
// does not exist; agent A reads its own; an approver and an auditor read
// all. The checkpoint and the hash tiles stay readable by every caller.
// On main, agent B read agent A's action and instruction.
func TestLogAccessByRole(t *testing.T) {
	e := start(t)
	const secret = "pay the invoice of agent A's customer"
	r := e.do(t, "POST", "/v1/actions", "token-a", "application/json",
		`{"action": {"type": "transfer", "amount": 5, "to": "acct-a"}, "instruction": "`+secret+`"}`)
	if r.status != 200 {
		t.Fatalf("agent A's action: %d %s", r.status, r.raw)
	}
	if _, err := e.cp.Checkpoint(); err != nil { // covers the decision and the outcome
		t.Fatal(err)
	}
	size := e.log.Size()
	if size != 2 {
		t.Fatalf("log size %d, want 2 (decision, outcome)", size)
	}
	missing := itoa(size + 7)

	for i := range size {
		for _, route := range []string{"/v1/log/entries/", "/v1/log/proof/"} {
			path := route + itoa(i)
			own := e.do(t, "GET", path, "token-a", "", "")
			if own.status != 200 || !strings.Contains(own.raw, "agent-a") && !strings.Contains(own.raw, "tlog-proof") {
				t.Errorf("agent A, its own %s: %d %s, want 200 with its entry", path, own.status, own.raw)
			}
			for _, tok := range []string{"token-approver", "token-auditor"} {
				if got := e.do(t, "GET", path, tok, "", ""); got.status != 200 || got.raw != own.raw {
					t.Errorf("%s, %s: %d %s, want 200 and what agent A read", tok, path, got.status, got.raw)
				}
			}
			other := e.do(t, "GET", path, "token-b", "", "")
			absent := e.do(t, "GET", route+missing, "token-b", "", "")
			if other.status != 404 || errCode(other) != "not_found" || other.raw != absent.raw {
				t.Errorf("agent B, agent A's %s: %d %s; want exactly the answer for a missing entry: %d %s",
					path, other.status, other.raw, absent.status, absent.raw)
			}
			if strings.Contains(other.raw, "agent-a") || strings.Contains(other.raw, "tlog-proof") {
				t.Errorf("agent B read agent A's entry at %s: %s", path, other.raw)
			}
		}
	}

	// The entry bundles hold every entry: approvers and auditors only.
	// The hash tiles and the checkpoint hold no entry: every caller.
	var bundle, hashTile string
	filepath.WalkDir(e.tiles, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(e.tiles, p)
			if strings.HasPrefix(rel, "tile/entries/") {
				bundle = "/v1/log/" + filepath.ToSlash(rel)
			} else if strings.HasPrefix(rel, "tile/") {
				hashTile = "/v1/log/" + filepath.ToSlash(rel)
			}
		}
		return nil
	})
	if bundle == "" || hashTile == "" {
		t.Fatalf("no entry bundle or hash tile under %s", e.tiles)
	}
	for _, path := range []string{bundle, "/v1/log/tile/entries/", "/v1/log/tile/entries"} {
		for _, tok := range []string{"token-a", "token-b"} {
			if got := e.do(t, "GET", path, tok, "", ""); got.status != 403 || errCode(got) != "forbidden" || strings.Contains(got.raw, secret) {
				t.Errorf("%s, %s: %d %s, want 403 forbidden", tok, path, got.status, got.raw)
			}
		}
	}
	for _, tok := range []string{"token-approver", "token-auditor"} {
		if got := e.do(t, "GET", bundle, tok, "", ""); got.status != 200 || !strings.Contains(got.raw, secret) {
			t.Errorf("%s, %s: %d, want 200 with the entries", tok, bundle, got.status)
		}
	}
	for _, tok := range []string{"token-a", "token-b", "token-approver", "token-auditor"} {
		for _, path := range []string{hashTile, "/v1/log/checkpoint"} {
			if got := e.do(t, "GET", path, tok, "", ""); got.status != 200 {
				t.Errorf("%s, %s: %d %s, want 200", tok, path, got.status, got.raw)
			}
		}
	}
}

// TestAuditorIsReadOnly: an auditor's token neither acts nor votes, and is
// no agent for other front ends (the MCP proxy).
func TestAuditorIsReadOnly(t *testing.T) {
	e := start(t)
	for _, c := range []struct{ method, path string }{
		{"POST", "/v1/actions"}, {"POST", "/v1/decide"}, {"GET", "/v1/requests/r1"},
		{"GET", "/v1/approvals"}, {"POST", "/v1/requests/r1/approvals"}, {"POST", "/v1/requests/r1/rejections"},
	} {
		if got := e.do(t, c.method, c.path, "token-auditor", "application/json", small); got.status != 403 || errCode(got) != "forbidden" {
			t.Errorf("auditor %s %s: %d %s, want 403 forbidden", c.method, c.path, got.status, got.raw)
		}
	}
	if e.upstream.Load() != 0 || e.log.Size() != 0 {
		t.Fatalf("an auditor's request reached the upstream or the log")
	}
	auth := httpapi.AgentAuthenticator([]httpapi.Token{{SHA256: httpapi.HashToken("t"), Agent: policy.Agent{ID: "audrey"}, Auditor: true}})
	if _, ok := auth("t", httptest.NewRequest("GET", "/mcp", nil)); ok {
		t.Fatal("an auditor's token authenticated as an agent")
	}
}

// TestReadyzUnauthenticated: without a token /readyz says only whether the
// gateway is ready and, when not, the code; the policy digest, version,
// signers and the reason are for a caller with a valid token. On main the
// unauthenticated body held the active policy.
func TestReadyzUnauthenticated(t *testing.T) {
	ready := true
	api := httpapi.New(httpapi.Config{
		Tokens: []httpapi.Token{{SHA256: httpapi.HashToken("token-a"), Agent: policy.Agent{ID: "agent-a"}}},
		Ready:  func() bool { return ready },
		Reason: func() string { return "bundle /etc/rulelock/b1 is signed by 1 of 2 keys" },
		Status: func() httpapi.Active {
			return httpapi.Active{Policy: "sha256:abc", Version: 7, Signers: []string{"ops+1234"}}
		},
	})
	get := func(token string) reply {
		req := httptest.NewRequest("GET", "/readyz", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		r := reply{status: rec.Code, raw: rec.Body.String()}
		jsonUnmarshal(rec.Body.Bytes(), &r.body)
		return r
	}
	for _, c := range []struct {
		ready  bool
		status int
		keys   []string
	}{
		{true, 200, []string{"status"}},
		{false, 503, []string{"code", "status"}},
	} {
		ready = c.ready
		for _, tok := range []string{"", "wrong-token"} {
			r := get(tok)
			if keys := slices.Sorted(maps.Keys(r.body)); r.status != c.status || !slices.Equal(keys, c.keys) {
				t.Errorf("ready=%v, token %q: %d %s, want %d with only %v", c.ready, tok, r.status, r.raw, c.status, c.keys)
			}
			for _, leak := range []string{"sha256:abc", "ops+1234", "signed by"} {
				if strings.Contains(r.raw, leak) {
					t.Errorf("ready=%v, token %q: /readyz reveals %q: %s", c.ready, tok, leak, r.raw)
				}
			}
		}
		r := get("token-a")
		want := "sha256:abc"
		if !c.ready {
			want = "signed by"
		}
		if r.status != c.status || !strings.Contains(r.raw, want) {
			t.Errorf("ready=%v with a token: %d %s, want %d naming %q", c.ready, r.status, r.raw, c.status, want)
		}
	}
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }

func jsonUnmarshal(b []byte, v any) { json.Unmarshal(b, v) }
