package httpapi_test

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/policy"
	"golang.org/x/mod/sumdb/note"
)

const rules = `rule "AllowSmall" {
  precondition: action.type == "transfer"
  condition: action.amount <= 100
  allow
}
`

type env struct {
	url      string
	log      *audit.Log
	cp       *audit.Checkpointer
	tiles    string // the tiles directory
	upstream atomic.Int64
}

func start(t *testing.T) *env {
	t.Helper()
	return startWith(t, rules, `{"done": true}`)
}

// startWith serves a gateway under the policy src whose transfer and
// refund actions go to an upstream that answers reply.
func startWith(t *testing.T, src, reply string) *env {
	t.Helper()
	dir := t.TempDir()
	l, err := audit.Open(dir+"/log", audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	skey, _, err := note.GenerateKey(nil, "test.rulelock/log")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	cp, err := audit.NewCheckpointer(l, signer, audit.CheckpointOptions{TilesDir: dir + "/tiles"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.FromSources([]policy.Source{{Name: "p.rules", Data: []byte(src)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{log: l, cp: cp, tiles: dir + "/tiles"}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.upstream.Add(1)
		if got := r.Header.Get("Authorization"); got != "Bearer upstream-credential" {
			t.Errorf("upstream saw Authorization %q", got)
		}
		io.WriteString(w, reply)
	}))
	t.Cleanup(up.Close)
	ex := &gateway.HTTPExecutor{Method: "POST", URL: up.URL, Headers: http.Header{"Authorization": {"Bearer upstream-credential"}}}
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l, Executors: map[string]gateway.Executor{"transfer": ex, "refund": ex}})
	if err != nil {
		t.Fatal(err)
	}
	api := httpapi.New(httpapi.Config{
		Gateway: gw,
		Tokens: []httpapi.Token{
			{SHA256: httpapi.HashToken("token-a"), Agent: policy.Agent{ID: "agent-a"}},
			{SHA256: httpapi.HashToken("token-b"), Agent: policy.Agent{ID: "agent-b"}},
			{SHA256: httpapi.HashToken("token-approver"), Agent: policy.Agent{ID: "alice"}, Approver: true},
			{SHA256: httpapi.HashToken("token-auditor"), Agent: policy.Agent{ID: "audrey"}, Auditor: true},
		},
		Log:     &httpapi.AuditLog{Log: l, Checkpointer: cp, TilesDir: dir + "/tiles"},
		Ready:   func() bool { return true },
		MaxBody: 1024,
	})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

type reply struct {
	status int
	body   map[string]any
	raw    string
}

func (e *env) do(t *testing.T, method, path, token, ctype, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, raw: string(b)}
	json.Unmarshal(b, &r.body)
	return r
}

func errCode(r reply) string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

const small = `{"action": {"type": "transfer", "amount": 5, "to": "x"}}`

func TestSubmit(t *testing.T) {
	e := start(t)
	r := e.do(t, "POST", "/v1/actions", "token-a", "application/json", small)
	if r.status != 200 {
		t.Fatalf("got %d %s", r.status, r.raw)
	}
	d := r.body["decision"].(map[string]any)
	if d["decision"] != "allow" || r.body["outcome"] == nil || e.upstream.Load() != 1 {
		t.Fatalf("got %s, upstream %d", r.raw, e.upstream.Load())
	}
	id := r.body["request_id"].(string)
	if got := e.do(t, "GET", "/v1/requests/"+id, "token-a", "", ""); got.status != 200 {
		t.Fatalf("own request: %d %s", got.status, got.raw)
	}
	// Agent B cannot see agent A's request.
	if got := e.do(t, "GET", "/v1/requests/"+id, "token-b", "", ""); got.status != 404 {
		t.Fatalf("other agent's request: got %d, want 404", got.status)
	}
	// Decide only: no execution.
	r = e.do(t, "POST", "/v1/decide", "token-a", "application/json; charset=utf-8", small)
	if r.status != 200 || e.upstream.Load() != 1 {
		t.Fatalf("decide: %d %s, upstream %d", r.status, r.raw, e.upstream.Load())
	}
	denied := e.do(t, "POST", "/v1/actions", "token-a", "application/json", `{"action": {"type": "transfer", "amount": 500, "to": "x"}}`)
	if denied.status != 200 || denied.body["decision"].(map[string]any)["decision"] != "deny" || e.upstream.Load() != 1 {
		t.Fatalf("deny: %d %s", denied.status, denied.raw)
	}
}

// TestEveryRouteAuthenticates walks the route table: a route that answers
// without a valid token (other than the health checks) fails the test.
func TestEveryRouteAuthenticates(t *testing.T) {
	e := start(t)
	routes := httpapi.New(httpapi.Config{}).Routes()
	if len(routes) < 10 {
		t.Fatalf("only %d routes", len(routes))
	}
	for pattern, authenticated := range routes {
		method, p, _ := strings.Cut(pattern, " ")
		p = strings.NewReplacer("{id}", "r1", "{i}", "0").Replace(p)
		if strings.HasSuffix(p, "/") {
			p += "0/0"
		}
		for _, tok := range []string{"", "wrong", "Token-a", "token-aa", "token-"} {
			r := e.do(t, method, p, tok, "application/json", small)
			if authenticated && (r.status != 401 || errCode(r) != "unauthenticated") {
				t.Errorf("%s with token %q: got %d %s, want 401 unauthenticated", pattern, tok, r.status, r.raw)
			}
			if !authenticated && !(p == "/healthz" || p == "/readyz") {
				t.Errorf("%s is public", pattern)
			}
		}
	}
	if e.upstream.Load() != 0 {
		t.Fatal("an unauthenticated request reached the upstream")
	}
}

func TestRefusals(t *testing.T) {
	e := start(t)
	tests := []struct {
		name, method, path, ctype, body string
		status                          int
		code                            string
		logged                          bool // an authenticated refusal is a logged denial
	}{
		{"text/plain", "POST", "/v1/actions", "text/plain", small, 415, "unsupported_media_type", true},
		{"no content type", "POST", "/v1/actions", "", small, 415, "unsupported_media_type", true},
		{"latin1", "POST", "/v1/actions", "application/json; charset=latin1", small, 415, "unsupported_media_type", true},
		{"json lookalike", "POST", "/v1/actions", "application/json-patch+json", small, 415, "unsupported_media_type", true},
		{"too large", "POST", "/v1/actions", "application/json", `{"action": {"type": "transfer", "memo": "` + strings.Repeat("x", 2000) + `"}}`, 413, "too_large", true},
		{"malformed", "POST", "/v1/actions", "application/json", `{"action": `, 400, "bad_request", true},
		{"duplicate key", "POST", "/v1/actions", "application/json", `{"action": {"type": "transfer", "amount": 5, "amount": 500, "to": "x"}}`, 400, "bad_request", true},
		{"agent in body", "POST", "/v1/actions", "application/json", `{"action": {"type": "transfer", "amount": 5, "to": "x"}, "agent": {"id": "agent-b"}}`, 400, "bad_request", true},
		{"now in body", "POST", "/v1/actions", "application/json", `{"action": {"type": "transfer", "amount": 5, "to": "x"}, "now": "2020-01-01T00:00:00Z"}`, 400, "bad_request", true},
		{"double slash", "POST", "//v1/actions", "application/json", small, 400, "non_canonical_path", false},
		{"dot segment", "POST", "/v1/./actions", "application/json", small, 400, "non_canonical_path", false},
		{"dot dot", "POST", "/v1/log/../actions", "application/json", small, 400, "non_canonical_path", false},
		{"escaped", "POST", "/v1/%61ctions", "application/json", small, 400, "non_canonical_path", false},
		{"trailing slash", "POST", "/v1/actions/", "application/json", small, 404, "not_found", false},
		{"wrong method", "GET", "/v1/actions", "", "", 405, "method_not_allowed", false},
		{"bad index", "GET", "/v1/log/entries/01", "", "", 400, "bad_request", false},
	}
	for _, tt := range tests {
		before := e.log.Size()
		r := e.do(t, tt.method, tt.path, "token-a", tt.ctype, tt.body)
		if r.status != tt.status || (tt.code != "" && errCode(r) != tt.code) {
			t.Errorf("%s: got %d %s, want %d %s", tt.name, r.status, r.raw, tt.status, tt.code)
		}
		if got := e.log.Size() > before; got != tt.logged {
			t.Errorf("%s: logged %v, want %v", tt.name, got, tt.logged)
		}
	}
	if e.upstream.Load() != 0 {
		t.Fatal("a refused request reached the upstream")
	}
}

func TestLogRoutes(t *testing.T) {
	e := start(t)
	e.do(t, "POST", "/v1/actions", "token-a", "application/json", small)
	r := e.do(t, "GET", "/v1/log/entries/0", "token-a", "", "")
	if r.status != 200 || r.body["kind"] != "decision" {
		t.Fatalf("entry 0: %d %s", r.status, r.raw)
	}
	if r := e.do(t, "GET", "/v1/log/entries/99", "token-a", "", ""); r.status != 404 {
		t.Fatalf("entry 99: got %d", r.status)
	}
}

// TestAmbiguousToken: a token listed for two identities authenticates
// neither.
func TestAmbiguousToken(t *testing.T) {
	api := httpapi.New(httpapi.Config{Tokens: []httpapi.Token{
		{SHA256: httpapi.HashToken("shared"), Agent: policy.Agent{ID: "agent-a"}},
		{SHA256: httpapi.HashToken("shared"), Agent: policy.Agent{ID: "agent-b"}},
	}})
	srv := httptest.NewServer(api)
	defer srv.Close()
	e := &env{url: srv.URL}
	if r := e.do(t, "POST", "/v1/decide", "shared", "application/json", small); r.status != 401 {
		t.Fatalf("got %d %s, want 401", r.status, r.raw)
	}
}

// TestBodyWithoutLength: a chunked body (no Content-Length) is read within
// the same limit.
func TestBodyWithoutLength(t *testing.T) {
	e := start(t)
	for _, c := range []struct {
		body   string
		status int
	}{
		{small, 200},
		{`{"action": {"type": "transfer", "memo": "` + strings.Repeat("x", 2000) + `"}}`, 413},
	} {
		req, err := http.NewRequest("POST", e.url+"/v1/decide", io.MultiReader(strings.NewReader(c.body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer token-a")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%.40s…: got %d %s, want %d", c.body, resp.StatusCode, b, c.status)
		}
	}
}

// TestAgentAuthenticatorCertBound: the MCP front end's lookup applies a
// token's certificate binding as the API does; approver tokens never act.
func TestAgentAuthenticatorCertBound(t *testing.T) {
	certA, certB := &x509.Certificate{Raw: []byte("certificate A")}, &x509.Certificate{Raw: []byte("certificate B")}
	authn := httpapi.AgentAuthenticator([]httpapi.Token{
		{SHA256: httpapi.HashToken("bound"), Agent: policy.Agent{ID: "a"}, CertSHA256: sha256.Sum256(certA.Raw)},
		{SHA256: httpapi.HashToken("free"), Agent: policy.Agent{ID: "b"}},
		{SHA256: httpapi.HashToken("approver"), Agent: policy.Agent{ID: "c"}, Approver: true},
	})
	over := func(c *x509.Certificate) *http.Request {
		r := httptest.NewRequest("POST", "/mcp", nil)
		if c != nil {
			r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
		}
		return r
	}
	for _, c := range []struct {
		token string
		cert  *x509.Certificate
		want  string // agent id, "" for refused
	}{
		{"bound", certA, "a"},
		{"bound", certB, ""},
		{"bound", nil, ""},
		{"free", nil, "b"},
		{"free", certB, "b"},
		{"approver", nil, ""},
		{"", nil, ""},
	} {
		a, ok := authn(c.token, over(c.cert))
		if got := map[bool]string{true: a.ID}[ok]; got != c.want {
			t.Errorf("token %q: got %q (%v), want %q", c.token, a.ID, ok, c.want)
		}
	}
}
