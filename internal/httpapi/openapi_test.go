package httpapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/internal/search"
	"github.com/rulelock/rulelock/policy"
)

// specPath is the API's contract.
const specPath = "../../docs/openapi.yaml"

// spec is docs/openapi.yaml, parsed, with its validator.
type spec struct {
	model *v3.Document
	v     validator.Validator
	error *base.Schema // the Error schema, for replies of no route
}

func loadSpec(t *testing.T) *spec {
	t.Helper()
	b, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(b)
	if err != nil {
		t.Fatal(err)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("%s: %v", specPath, err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("%s: %v", specPath, errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("%s is not a valid OpenAPI document: %s: %s", specPath, e.Message, e.Reason)
		}
		t.FailNow()
	}
	if got := m.Model.Version; !strings.HasPrefix(got, "3.1") {
		t.Fatalf("%s: openapi %s, want 3.1", specPath, got)
	}
	s := &spec{model: &m.Model, v: v}
	sp, ok := m.Model.Components.Schemas.Get("Error")
	if !ok {
		t.Fatal("no Error schema")
	}
	s.error = sp.Schema()
	return s
}

// operations returns the spec's operations as "METHOD /path".
func (s *spec) operations() []string {
	var out []string
	for p, item := range s.model.Paths.PathItems.FromOldest() {
		for m := range item.GetOperations().FromOldest() {
			out = append(out, strings.ToUpper(m)+" "+p)
		}
	}
	return out
}

// routeOf is the server's route pattern that serves the spec's operation
// op: the same pattern ({id} is a path parameter in both), or the
// subtree pattern ("GET /v1/log/tile/") whose prefix it has.
func routeOf(op string, routes map[string]bool) string {
	if _, ok := routes[op]; ok {
		return op
	}
	best := ""
	for r := range routes {
		if strings.HasSuffix(r, "/") && strings.HasPrefix(op, r) && len(r) > len(best) {
			best = r
		}
	}
	return best
}

// TestOpenAPICoversRoutes: every route of the server is in
// docs/openapi.yaml and every path there is a route, so that a route
// added without its documentation, or documentation of a route that is
// gone, fails.
func TestOpenAPICoversRoutes(t *testing.T) {
	s := loadSpec(t)
	routes := httpapi.New(httpapi.Config{}).Routes()
	covered := map[string]bool{}
	for _, op := range s.operations() {
		r := routeOf(op, routes)
		if r == "" {
			t.Errorf("docs/openapi.yaml documents %s, which is no route of the server", op)
			continue
		}
		covered[r] = true
	}
	for r := range routes {
		if !covered[r] {
			t.Errorf("route %s is not in docs/openapi.yaml", r)
		}
	}
	// The routes without authentication are exactly those the spec
	// documents as callable without a token.
	for p, item := range s.model.Paths.PathItems.FromOldest() {
		for m, op := range item.GetOperations().FromOldest() {
			r := routeOf(strings.ToUpper(m)+" "+p, routes)
			public := op.Security != nil && (len(op.Security) == 0 || slices.ContainsFunc(op.Security, func(req *base.SecurityRequirement) bool {
				return req.Requirements == nil || req.Requirements.Len() == 0
			}))
			if r != "" && public == routes[r] {
				t.Errorf("%s %s: public in the spec %v, authenticated by the server %v", m, p, public, routes[r])
			}
		}
	}
}

// TestOpenAPIValidatorRejects proves the validator and the spec catch the
// bug of issue 18: the approval object in Go's default encoding, and an
// undocumented member, are rejected.
func TestOpenAPIValidatorRejects(t *testing.T) {
	s := loadSpec(t)
	bad := map[string]string{
		"default encoding": `{"request_id":"r1","decision":{"decision":"require_approval","reason":"approval_required","rules":[],"errors":[],"action_hash":"sha256:` + strings.Repeat("0", 64) + `","policy":"p"},` +
			`"receipt":{"index":0,"leaf_hash":"x","covered_by_size":1},"approval":{"ID":"r1","Action":[104,57],"State":"pending","Ended":"0001-01-01T00:00:00Z","Reconcile":false}}`,
		"unknown member": `{"request_id":"r1","decision":{"decision":"allow","reason":"x","rules":[],"errors":[],"action_hash":"sha256:` + strings.Repeat("0", 64) + `","policy":"p"},` +
			`"receipt":{"index":0,"leaf_hash":"x","covered_by_size":1},"extra":1}`,
		"bad error code": `{"error":{"code":"oops","message":"m"}}`,
	}
	for name, body := range bad {
		status := 200
		if strings.HasPrefix(body, `{"error"`) {
			status = 404
		}
		req := httptest.NewRequest("GET", "http://127.0.0.1:8080/v1/requests/r1", nil)
		req.Header.Set("Authorization", "Bearer x")
		resp := &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body)), Request: req}
		if ok, _ := s.v.ValidateHttpResponse(req, resp); ok {
			t.Errorf("%s: the validator accepted %s", name, body)
		}
	}
	// A reply of no route is checked against the Error schema alone.
	for _, body := range []string{`{"error":{"code":"oops","message":"m"}}`, `{"error":{"code":"not_found"}}`, `{"code":"not_found","message":"m"}`} {
		if ok, _ := schema_validation.NewSchemaValidator().ValidateSchemaBytesWithVersion(s.error, []byte(body), 3.1); ok {
			t.Errorf("the Error schema accepted %s", body)
		}
	}
}

// conformance is a real server (gateway, audit log in a temp dir,
// checkpointer, approvers, an httptest upstream) whose every reply is
// validated against docs/openapi.yaml.
type conformance struct {
	t         *testing.T
	s         *spec
	dir       string // the data directory: log and tiles
	logSigner note.Signer
	signers   map[string]note.Signer // the approvers'
	reg       *approval.Registry
	upstream  string
	executed  atomic.Int64 // calls the upstream received

	url   string
	cp    *audit.Checkpointer
	tiles string
	stop  func()
	calls int
}

// The policy: small transfers are allowed, large ones denied; trades
// need two treasury approvers; reports are allowed and decide-only.
const conformancePolicy = `policy "api" {
  default: deny
}
rule "AllowSmall" {
  precondition: action.type == "transfer"
  condition: action.amount <= 100
  allow
}
rule "NoLarge" {
  precondition: action.type == "transfer"
  condition: action.amount <= 1000
  deny: "transfers over 1000 are not allowed"
}
rule "TwoTreasurers" {
  precondition: action.type == "trade"
  condition: false
  require_approval {
    approvers: 2
    groups: ["treasury"]
    within: 1h
    message: "two treasurers sign every trade"
  }
}
rule "AllowTrades" {
  precondition: action.type == "trade"
  allow
}
rule "AllowReports" {
  precondition: action.type == "report"
  allow
}
`

func newConformance(t *testing.T) *conformance {
	t.Helper()
	skey, _, err := note.GenerateKey(nil, "test.rulelock/log")
	if err != nil {
		t.Fatal(err)
	}
	logSigner, _ := note.NewSigner(skey)
	c := &conformance{t: t, s: loadSpec(t), dir: t.TempDir(), logSigner: logSigner, signers: map[string]note.Signer{}}
	var as []approval.Approver
	for _, id := range []string{"alice", "bob", "carol"} {
		skey, vkey, err := note.GenerateKey(nil, id)
		if err != nil {
			t.Fatal(err)
		}
		c.signers[id], _ = note.NewSigner(skey)
		as = append(as, approval.Approver{ID: id, Groups: []string{"treasury"}, Key: vkey})
	}
	if c.reg, err = approval.NewRegistry(as); err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.executed.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"done": true}`)
	}))
	t.Cleanup(up.Close)
	c.upstream = up.URL
	c.start()
	return c
}

// start opens the log in c.dir, rebuilds the gateway's state from it (a
// restart when it is not empty) and serves the API.
func (c *conformance) start() {
	t := c.t
	t.Helper()
	l, err := audit.Open(filepath.Join(c.dir, "log"), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c.tiles = filepath.Join(c.dir, "tiles")
	if c.cp, err = audit.NewCheckpointer(l, c.logSigner, audit.CheckpointOptions{TilesDir: c.tiles}); err != nil {
		t.Fatal(err)
	}
	p, err := policy.FromSources([]policy.Source{{Name: "api.rules", Data: []byte(conformancePolicy)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ex := &gateway.HTTPExecutor{Method: "POST", URL: c.upstream, Headers: http.Header{"Authorization": {"Bearer upstream-credential"}}}
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l, Approvers: c.reg,
		Executors: map[string]gateway.Executor{"transfer": ex, "trade": ex}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Rebuild(t.Context(), l); err != nil {
		t.Fatal(err)
	}
	api := httpapi.New(httpapi.Config{
		Gateway: gw,
		Tokens: []httpapi.Token{
			{SHA256: httpapi.HashToken("agent"), Agent: policy.Agent{ID: "agent-1"}},
			{SHA256: httpapi.HashToken("alice"), Agent: policy.Agent{ID: "alice"}, Approver: true},
			{SHA256: httpapi.HashToken("bob"), Agent: policy.Agent{ID: "bob"}, Approver: true},
			{SHA256: httpapi.HashToken("auditor"), Agent: policy.Agent{ID: "audrey"}, Auditor: true},
		},
		Log:     &httpapi.AuditLog{Log: l, Checkpointer: c.cp, TilesDir: c.tiles, Index: search.Open(filepath.Join(c.dir, "index"))},
		Ready:   func() bool { return true },
		Status:  func() httpapi.Active { return httpapi.Active{Policy: p.Digest(), DevelopmentMode: true} },
		MaxBody: 4096,
	})
	srv := httptest.NewServer(api)
	c.url = srv.URL
	c.stop = func() {
		srv.Close()
		l.Close()
	}
}

// restart stops the server and its log and starts them again on the same
// data directory, as a restarted gateway does.
func (c *conformance) restart() {
	c.t.Helper()
	c.stop()
	c.start()
}

// call sends a request, checks its status, and validates the reply
// against the spec: by its operation when the path and method are one
// (and the request too, when k is validRequest), or as an Error object
// when no route answers it. It returns the reply's body.
func (c *conformance) call(method, path, token, ctype, body string, want int, k kind) []byte {
	c.t.Helper()
	c.calls++
	req, err := http.NewRequest(method, c.url+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode != want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	// The validator reads a request as the server received it.
	vreq := httptest.NewRequest(method, "http://127.0.0.1:8080"+path, strings.NewReader(body))
	vreq.Header = req.Header.Clone()
	vresp := &http.Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(b)), Request: vreq}
	if k == noRoute {
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			c.t.Errorf("%s %s: Content-Type %q, want application/json", method, path, resp.Header.Get("Content-Type"))
		}
		if ok, errs := schema_validation.NewSchemaValidator().ValidateSchemaBytesWithVersion(c.s.error, b, 3.1); !ok {
			c.report(method, path, b, errs)
		}
		return b
	}
	if ok, errs := c.s.v.ValidateHttpResponse(vreq, vresp); !ok {
		c.report(method, path, b, errs)
	}
	if k == validRequest {
		vreq = httptest.NewRequest(method, "http://127.0.0.1:8080"+path, strings.NewReader(body))
		vreq.Header = req.Header.Clone()
		if ok, errs := c.s.v.ValidateHttpRequest(vreq); !ok {
			for _, e := range errs {
				c.t.Errorf("%s %s: the request does not match the spec: %s: %s", method, path, e.Message, e.Reason)
			}
		}
	}
	return b
}

// kind is what call validates besides the reply.
type kind int

const (
	validRequest kind = iota // the request matches the spec too
	badRequest               // a request the spec does not allow (its reply is documented)
	noRoute                  // no operation answers it (404, 405, a non-canonical path): the reply must be an Error
)

func (c *conformance) report(method, path string, body []byte, errs any) {
	c.t.Helper()
	b, _ := json.MarshalIndent(errs, "", "  ")
	c.t.Errorf("%s %s: the reply does not match docs/openapi.yaml:\n%s\nreply: %s", method, path, b, body)
}

// TestOpenAPIConformance drives a real gateway through every route, the
// documented outcomes and the documented errors, and validates every
// reply against docs/openapi.yaml with pb33f/libopenapi-validator.
func TestOpenAPIConformance(t *testing.T) {
	c := newConformance(t)
	const js = "application/json"
	type result struct {
		RequestID string `json:"request_id"`
		Decision  struct {
			Decision   string `json:"decision"`
			Reason     string `json:"reason"`
			ActionHash string `json:"action_hash"`
		} `json:"decision"`
		Outcome  *struct{ Status string } `json:"outcome"`
		Receipt  struct{ Index int64 }    `json:"receipt"`
		Approval map[string]any           `json:"approval"`
	}
	var r result
	decode := func(b []byte, v any) {
		t.Helper()
		if r, ok := v.(*result); ok {
			*r = result{}
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
	}

	// Allowed, executed.
	decode(c.call("POST", "/v1/actions", "agent", js, `{"action": {"type": "transfer", "amount": 5, "to": "acct-1"}, "session": "s-1", "instruction": "pay", "reasoning": "due"}`, 200, validRequest), &r)
	if r.Decision.Decision != "allow" || r.Outcome == nil || r.Outcome.Status != "ok" {
		t.Fatalf("allowed action: %+v", r)
	}
	allowed := r.RequestID
	// Denied.
	decode(c.call("POST", "/v1/actions", "agent", js, `{"action": {"type": "transfer", "amount": 5000, "to": "acct-1"}}`, 200, validRequest), &r)
	if r.Decision.Decision != "deny" {
		t.Fatalf("denied action: %+v", r)
	}
	// Decide only.
	c.call("POST", "/v1/decide", "agent", js, `{"action": {"type": "transfer", "amount": 5, "to": "acct-1"}}`, 200, validRequest)
	// A decide-only type and its outcome report, once.
	decode(c.call("POST", "/v1/actions", "agent", js, `{"action": {"type": "report", "n": 1}}`, 200, validRequest), &r)
	report := r.RequestID
	c.call("POST", "/v1/requests/"+report+"/outcome", "agent", js, `{"status": "ok", "result": {"reference": "INV-1"}}`, 200, validRequest)
	c.call("POST", "/v1/requests/"+report+"/outcome", "agent", js, `{"status": "ok"}`, 409, validRequest)
	c.call("GET", "/v1/requests/"+allowed, "agent", "", "", 200, validRequest)

	// Parked, approved by two signed statements, executed.
	decode(c.call("POST", "/v1/actions", "agent", js, `{"action": {"type": "trade", "amount": 750000}}`, 200, validRequest), &r)
	if r.Decision.Decision != "require_approval" || r.Approval["state"] != "pending" || r.Approval["action_hash"] != r.Decision.ActionHash {
		t.Fatalf("parked action: %+v", r)
	}
	traded, approvalEntry := r.RequestID, itoa(r.Receipt.Index+1) // alice's approval comes next
	p := c.pending(traded)
	c.call("POST", "/v1/requests/"+traded+"/approvals", "alice", js, c.vote("alice", p.Request, approval.Approve), 200, validRequest)
	c.call("POST", "/v1/requests/"+traded+"/approvals", "alice", js, c.vote("alice", p.Request, approval.Approve), 409, validRequest) // duplicate_approver
	c.call("POST", "/v1/requests/"+traded+"/approvals", "alice", js, `{"note": "not a statement"}`, 400, validRequest)                // bad_statement
	var vr struct {
		Request map[string]any
		Result  *result
	}
	decode(c.call("POST", "/v1/requests/"+traded+"/approvals", "bob", js, c.vote("bob", p.Request, approval.Approve), 200, validRequest), &vr)
	if vr.Result == nil || vr.Result.Decision.Decision != "approved" || vr.Result.Outcome == nil || vr.Request["state"] != "executed" {
		t.Fatalf("the approval completing the quorum: %+v", vr)
	}
	decode(c.call("GET", "/v1/requests/"+traded+"?wait=1s", "agent", "", "", 200, validRequest), &r)
	if r.Decision.Decision != "approved" || r.Approval["state"] != "executed" || len(r.Approval["approvals"].([]any)) != 2 {
		t.Fatalf("executed request: %+v", r)
	}

	// Parked, rejected: its final decision is deny (approval_rejected).
	decode(c.call("POST", "/v1/actions", "agent", js, `{"action": {"type": "trade", "amount": 10}}`, 200, validRequest), &r)
	rejected := r.RequestID
	p = c.pending(rejected)
	c.call("POST", "/v1/requests/"+rejected+"/rejections", "bob", js, c.vote("bob", p.Request, approval.Reject), 200, validRequest)
	decode(c.call("GET", "/v1/requests/"+rejected+"?wait=5s", "agent", "", "", 200, validRequest), &r)
	if r.Decision.Decision != "deny" || r.Decision.Reason != "approval_rejected" || r.Approval["state"] != "rejected" {
		t.Fatalf("rejected request: %+v", r)
	}
	if rej, _ := r.Approval["rejection"].(map[string]any); rej == nil || !strings.HasPrefix(rej["note"].(string), "rulelock approval v1\n") {
		t.Fatalf("rejection: %v, want the signed statement as text", r.Approval["rejection"])
	}
	c.call("GET", "/v1/approvals", "alice", "", "", 200, validRequest)

	// A restart on the same data directory: a parked request comes back
	// whole (its requirement's message included), and the finished ones
	// read back from the log as they were answered.
	decode(c.call("POST", "/v1/actions", "agent", js, `{"action": {"type": "trade", "amount": 20}}`, 200, validRequest), &r)
	parked := r.RequestID
	before := c.executed.Load()
	c.restart()
	var after struct {
		Decision struct {
			Approval struct {
				Requirements []struct {
					Message string `json:"message"`
				} `json:"requirements"`
			} `json:"approval"`
		} `json:"decision"`
		Approval struct {
			State        string `json:"state"`
			Requirements []struct {
				Message string `json:"message"`
			} `json:"requirements"`
		} `json:"approval"`
	}
	decode(c.call("GET", "/v1/requests/"+parked, "agent", "", "", 200, validRequest), &after)
	if a := after.Approval; a.State != "pending" || len(a.Requirements) != 1 || a.Requirements[0].Message != "two treasurers sign every trade" ||
		len(after.Decision.Approval.Requirements) != 1 || after.Decision.Approval.Requirements[0].Message != a.Requirements[0].Message {
		t.Errorf("parked request after a restart: %+v, want pending with its requirement's message", after)
	}
	c.pending(parked)
	decode(c.call("GET", "/v1/requests/"+rejected, "agent", "", "", 200, validRequest), &r)
	if r.Decision.Decision != "deny" || r.Decision.Reason != "approval_rejected" {
		t.Errorf("rejected request after a restart: %+v", r)
	}
	c.call("GET", "/v1/requests/"+traded, "agent", "", "", 200, validRequest)
	c.call("GET", "/v1/requests/"+report, "agent", "", "", 200, validRequest)
	if c.executed.Load() != before {
		t.Errorf("the restart executed %d actions", c.executed.Load()-before)
	}

	// The log.
	if _, err := c.cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	c.call("GET", "/v1/log/checkpoint", "agent", "", "", 200, validRequest)
	c.call("GET", "/v1/log/entries/0", "auditor", "", "", 200, validRequest)
	decode(c.call("GET", "/v1/requests/"+allowed, "agent", "", "", 200, validRequest), &r)
	own := itoa(r.Receipt.Index)
	c.call("GET", "/v1/log/entries/"+own, "agent", "", "", 200, validRequest)
	c.call("GET", "/v1/log/proof/"+own, "agent", "", "", 200, validRequest)
	c.call("GET", "/v1/log/proof/"+own, "alice", "", "", 200, validRequest)
	c.call("GET", "/v1/log/entries/"+approvalEntry, "auditor", "", "", 200, validRequest)
	c.call("GET", "/v1/log/entries/"+approvalEntry, "agent", "", "", 404, validRequest) // an approval: no agent's
	c.call("GET", "/v1/log/entries/999999", "auditor", "", "", 404, validRequest)
	c.call("GET", "/v1/log/entries/01", "auditor", "", "", 400, badRequest)
	// The search: by request, by agent and kind with paging, refused to an
	// agent, a bad parameter.
	var found struct {
		Entries []struct {
			Index int64 `json:"index"`
		} `json:"entries"`
		NextFrom *int64 `json:"next_from"`
	}
	decode(c.call("GET", "/v1/log/find?request="+allowed, "auditor", "", "", 200, validRequest), &found)
	if len(found.Entries) < 2 {
		t.Errorf("find by request %s: %d entries, want its decision and outcome", allowed, len(found.Entries))
	}
	decode(c.call("GET", "/v1/log/find?agent=agent-1&kind=decision&limit=1", "alice", "", "", 200, validRequest), &found)
	if len(found.Entries) != 1 || found.NextFrom == nil {
		t.Errorf("find with limit=1: %+v, want one entry and next_from", found)
	}
	c.call("GET", "/v1/log/find?agent=agent-1", "agent", "", "", 403, validRequest)
	c.call("GET", "/v1/log/find?since=yesterday", "auditor", "", "", 400, validRequest)
	c.call("GET", "/v1/log/find?colour=red", "auditor", "", "", 400, validRequest)
	tiles := 0
	filepath.WalkDir(c.tiles, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(c.tiles, p)
		path := "/v1/log/" + filepath.ToSlash(rel)
		if strings.HasPrefix(rel, "tile/entries/") {
			c.call("GET", path, "auditor", "", "", 200, validRequest)
			c.call("GET", path, "agent", "", "", 403, validRequest)
		} else if strings.HasPrefix(rel, "tile/") {
			c.call("GET", path, "agent", "", "", 200, validRequest)
		}
		tiles++
		return nil
	})
	if tiles == 0 {
		t.Fatal("the checkpointer wrote no tiles")
	}
	c.call("GET", "/v1/log/tile/0/999", "agent", "", "", 404, validRequest)
	c.call("GET", "/v1/log/tile/0/000.p", "agent", "", "", 404, validRequest) // a directory
	c.call("GET", "/v1/log/tile/0/", "agent", "", "", 404, noRoute)

	// Health and metrics.
	c.call("GET", "/metrics", "agent", "", "", 200, validRequest)
	c.call("GET", "/healthz", "", "", "", 200, validRequest)
	var ready map[string]any
	decode(c.call("GET", "/readyz", "", "", "", 200, validRequest), &ready)
	if len(ready) != 1 {
		t.Errorf("/readyz without a token: %v, want the status only", ready)
	}
	decode(c.call("GET", "/readyz", "auditor", "", "", 200, validRequest), &ready)
	if ready["active"] == nil {
		t.Errorf("/readyz with a token: %v, want the active policy", ready)
	}

	// The documented errors.
	c.call("POST", "/v1/actions", "", js, `{"action": {"type": "transfer", "amount": 5}}`, 401, badRequest)
	c.call("POST", "/v1/actions", "wrong-token", js, `{"action": {"type": "transfer", "amount": 5}}`, 401, validRequest)
	c.call("POST", "/v1/actions", "alice", js, `{"action": {"type": "transfer", "amount": 5}}`, 403, validRequest)
	c.call("GET", "/v1/approvals", "agent", "", "", 403, validRequest)
	c.call("GET", "/v1/requests/no-such-request", "agent", "", "", 404, validRequest)
	c.call("GET", "/v1/requests/"+allowed+"?wait=soon", "agent", "", "", 400, badRequest)
	c.call("POST", "/v1/requests/no-such-request/approvals", "alice", js, c.vote("alice", p.Request, approval.Approve), 404, validRequest)
	c.call("POST", "/v1/actions", "agent", js, `{"action": {"type": "transfer", "amount": 5}, "pad": "`+strings.Repeat("x", 5000)+`"}`, 413, badRequest)
	c.call("POST", "/v1/actions", "agent", "text/plain", `{"action": {"type": "transfer", "amount": 5}}`, 415, badRequest)
	c.call("POST", "/v1/actions", "agent", js, `{"action": {"type": "transfer", "amount": 5}`, 400, badRequest) // bad JSON
	c.call("POST", "/v1/actions", "agent", js, `{"action": {"type": "transfer"}, "agent": "root"}`, 400, badRequest)
	c.call("POST", "/v1/requests/"+rejected+"/approvals", "alice", js, `{"note": 1}`, 400, badRequest)
	c.call("GET", "/v1/actions", "agent", "", "", 405, noRoute)
	c.call("GET", "/v1/no-such-route", "agent", "", "", 404, noRoute)
	c.call("POST", "//v1/actions", "agent", js, `{"action": {"type": "transfer", "amount": 5}}`, 400, noRoute)
	c.call("POST", "/v1/%61ctions", "agent", js, `{"action": {"type": "transfer", "amount": 5}}`, 400, noRoute)
	t.Logf("%d replies validated against %s", c.calls, specPath)
}

// pending finds request id in GET /v1/approvals, decoded as rulelock
// approve decodes it.
func (c *conformance) pending(id string) gateway.PendingRequest {
	c.t.Helper()
	var list struct {
		Pending []gateway.PendingRequest `json:"pending"`
	}
	if err := json.Unmarshal(c.call("GET", "/v1/approvals", "alice", "", "", 200, validRequest), &list); err != nil {
		c.t.Fatal(err)
	}
	for _, p := range list.Pending {
		if p.Request.ID == id {
			if string(p.Request.Statement(approval.Approve, "").Marshal()) != p.Approve {
				c.t.Fatalf("the statement rebuilt from the approval object differs from approve_statement:\n%s", p.Approve)
			}
			return p
		}
	}
	c.t.Fatalf("request %s is not pending", id)
	return gateway.PendingRequest{}
}

// vote is the body of an approval or rejection of r signed by approver.
func (c *conformance) vote(approver string, r approval.Request, v approval.Verdict) string {
	c.t.Helper()
	reason := ""
	if v == approval.Reject {
		reason = "wrong counterparty"
	}
	signed, err := approval.Sign(r.Statement(v, reason), c.signers[approver])
	if err != nil {
		c.t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{"note": string(signed)})
	return string(b)
}

// TestOpenAPINotReady validates the replies of a gateway that started
// without a policy: actions and decisions are 503 no_policy (logged,
// naming their entry), /readyz is 503 with its code, with and without a
// token.
func TestOpenAPINotReady(t *testing.T) {
	s := loadSpec(t)
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	gw, err := gateway.New(gateway.Config{Log: l})
	if err != nil {
		t.Fatal(err)
	}
	api := httpapi.New(httpapi.Config{
		Gateway: gw,
		Tokens:  []httpapi.Token{{SHA256: httpapi.HashToken("agent"), Agent: policy.Agent{ID: "agent-1"}}},
		Log:     &httpapi.AuditLog{Log: l},
		Ready:   func() bool { return true },
		Reason:  func() string { return "no bundle is configured" },
	})
	srv := httptest.NewServer(api)
	defer srv.Close()
	c := &conformance{t: t, s: s, url: srv.URL}
	var refusal struct {
		Error     struct{ Code string } `json:"error"`
		RequestID string                `json:"request_id"`
	}
	for _, path := range []string{"/v1/actions", "/v1/decide"} {
		if err := json.Unmarshal(c.call("POST", path, "agent", "application/json", `{"action": {"type": "transfer", "amount": 5}}`, 503, validRequest), &refusal); err != nil {
			t.Fatal(err)
		}
		if refusal.Error.Code != "no_policy" || refusal.RequestID == "" {
			t.Errorf("POST %s without a policy: %+v, want no_policy naming its logged entry", path, refusal)
		}
	}
	var ready map[string]any
	for _, token := range []string{"", "agent"} {
		if err := json.Unmarshal(c.call("GET", "/readyz", token, "", "", 503, validRequest), &ready); err != nil {
			t.Fatal(err)
		}
		if ready["code"] != "no_policy" || (token == "") != (ready["reason"] == nil) {
			t.Errorf("/readyz with token %q: %v", token, ready)
		}
	}
}

// TestOpenAPIErrorCodes: every refusal code of the approval package is in
// the spec's ErrorCode enum, as the API returns it as the error's code.
func TestOpenAPIErrorCodes(t *testing.T) {
	s := loadSpec(t)
	sp, ok := s.model.Components.Schemas.Get("ErrorCode")
	if !ok {
		t.Fatal("no ErrorCode schema")
	}
	enum := map[string]bool{}
	for _, n := range sp.Schema().Enum {
		enum[n.Value] = true
	}
	for _, e := range []*approval.Error{
		approval.ErrNotFound, approval.ErrClosed, approval.ErrExpired, approval.ErrQueueFull, approval.ErrInvalidRequest,
		approval.ErrDuplicateID, approval.ErrBadStatement, approval.ErrUnknownApprover, approval.ErrBadSignature,
		approval.ErrRequestMismatch, approval.ErrActionMismatch, approval.ErrPolicyMismatch, approval.ErrExpiryMismatch,
		approval.ErrVerdictMismatch, approval.ErrSelfApproval, approval.ErrNotInGroup, approval.ErrDuplicate,
	} {
		if !enum[e.Code()] {
			t.Errorf("docs/openapi.yaml's ErrorCode lacks %s", e.Code())
		}
	}
	for _, err := range []error{gateway.ErrNoPolicy, gateway.ErrUnsigned, gateway.ErrWitnessConflict} {
		if code, _ := gateway.Refusal(err); !enum[code] {
			t.Errorf("docs/openapi.yaml's ErrorCode lacks %s", code)
		}
	}
}
