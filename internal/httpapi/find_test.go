package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/internal/search"
	"github.com/rulelock/rulelock/policy"
)

// GET /v1/log/find: for approvers and auditors; while the index is far
// behind the log it answers 503 rather than scan; then the entries.
func TestFindRoute(t *testing.T) {
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 5 {
		e := &audit.Entry{Kind: audit.KindDecision, Time: time.Now(), Agent: fmt.Sprintf("agent-%d", i%2), RequestID: fmt.Sprintf("r%d", i),
			Decision: "deny", Action: audit.Text(`{"type":"transfer"}`)}
		if _, err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	ix := search.Open(t.TempDir())
	api := httpapi.New(httpapi.Config{
		Tokens: []httpapi.Token{
			{SHA256: httpapi.HashToken("agent"), Agent: policy.Agent{ID: "agent-0"}},
			{SHA256: httpapi.HashToken("auditor"), Agent: policy.Agent{ID: "audrey"}, Auditor: true},
		},
		Log: &httpapi.AuditLog{Log: l, Index: ix, MaxScan: 3},
	})
	srv := httptest.NewServer(api)
	defer srv.Close()
	get := func(path, token string) (int, string, http.Header) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	if status, body, _ := get("/v1/log/find?agent=agent-0", "agent"); status != 403 {
		t.Errorf("agent: %d %s, want 403", status, body)
	}
	status, body, h := get("/v1/log/find?agent=agent-0", "auditor")
	if status != 503 || !strings.Contains(body, "index_building") || h.Get("Retry-After") == "" {
		t.Errorf("index 5 entries behind, 3 allowed: %d %s, want 503 index_building", status, body)
	}
	if _, err := ix.Update(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	status, body, _ = get("/v1/log/find?agent=agent-0&limit=2", "auditor")
	var got struct {
		Entries []struct {
			Index int64 `json:"index"`
		} `json:"entries"`
		LogSize  int64  `json:"log_size"`
		NextFrom *int64 `json:"next_from"`
	}
	if err := json.Unmarshal([]byte(body), &got); status != 200 || err != nil {
		t.Fatalf("find: %d %s", status, body)
	}
	if len(got.Entries) != 2 || got.Entries[0].Index != 0 || got.Entries[1].Index != 2 || got.LogSize != 5 || got.NextFrom == nil || *got.NextFrom != 3 {
		t.Errorf("find agent-0, limit 2: %s", body)
	}
	for _, bad := range []string{"?since=yesterday", "?limit=0", "?limit=1001", "?from=-1", "?agent=a&agent=b", "?agnet=a"} {
		if status, body, _ := get("/v1/log/find"+bad, "auditor"); status != 400 {
			t.Errorf("%s: %d %s, want 400", bad, status, body)
		}
	}
}
