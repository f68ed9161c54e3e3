package console

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// The policy of the tests: a transfer over 10,000 waits for two
// treasurers; any other transfer is allowed.
const testRules = `policy "console-test" {
  default: deny
}
rule "NoHighValueTransfers" {
  precondition: action.type == "transfer"
  condition: action.amount <= 10000
  require_approval {
    approvers: 2
    groups: ["treasury"]
    within: 4h
    message: "Transfers over $10,000 require two treasurers"
  }
}
rule "AllowTransfers" {
  precondition: action.type == "transfer"
  allow
}
`

// testEnv is a console over a real gateway with a real log and
// checkpointer in a temporary directory, served by httptest. GET
// /test-login?as=ID signs ID in with the console's own startSession (the
// passkey sign-in is the other half's).
type testEnv struct {
	t       *testing.T
	srv     *Server
	hs      *httptest.Server
	log     *audit.Log
	cp      *audit.Checkpointer
	gw      *gateway.Gateway
	key     note.Verifier
	signers map[string]note.Signer
	people  map[string]Person

	mu       sync.Mutex
	refusals []string // "caller code"
}

func newEnv(t *testing.T) *testEnv { return newEnvWith(t, nil) }

// newEnvWith builds the environment; wrap, when set, wraps the LogAPI the
// console reads (a test that tampers with what the log serves).
func newEnvWith(t *testing.T, wrap func(httpapi.LogAPI) httpapi.LogAPI) *testEnv {
	t.Helper()
	dir := t.TempDir()
	l, err := audit.Open(filepath.Join(dir, "log"), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	skey, vkey, err := note.GenerateKey(nil, "test.rulelock/log")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	cp, err := audit.NewCheckpointer(l, signer, audit.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.FromSources([]policy.Source{{Name: "p.rules", Data: []byte(testRules)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, log: l, cp: cp, key: verifier, signers: map[string]note.Signer{}, people: map[string]Person{
		"alice@example.com":  {ID: "alice@example.com", Approver: true, Groups: []string{"treasury"}},
		"bob@example.com":    {ID: "bob@example.com", Approver: true, Groups: []string{"treasury"}},
		"audrey@example.com": {ID: "audrey@example.com", Auditor: true},
		"nobody@example.com": {ID: "nobody@example.com"}, // in the config, with no role
	}}
	var as []approval.Approver
	for _, id := range []string{"alice@example.com", "bob@example.com"} {
		sk, vk, err := note.GenerateKey(nil, id)
		if err != nil {
			t.Fatal(err)
		}
		e.signers[id], _ = note.NewSigner(sk)
		as = append(as, approval.Approver{ID: id, Groups: []string{"treasury"}, Key: vk})
	}
	reg, err := approval.NewRegistry(as)
	if err != nil {
		t.Fatal(err)
	}
	ok := gateway.ExecutorFunc(func(context.Context, gateway.Execution) gateway.Outcome {
		return gateway.Outcome{Status: gateway.StatusOK, Body: []byte(`{"paid":true}`)}
	})
	e.gw, err = gateway.New(gateway.Config{Policy: pol, Log: l, Approvers: reg, Executors: map[string]gateway.Executor{"transfer": ok}})
	if err != nil {
		t.Fatal(err)
	}
	var logAPI httpapi.LogAPI = &httpapi.AuditLog{Log: l, Checkpointer: cp}
	if wrap != nil {
		logAPI = wrap(logAPI)
	}
	// The server's address is known before it serves: it is the console's
	// origin (the WebAuthn relying party, which must be a name, not an IP
	// address, and the CSRF check's reference).
	e.hs = httptest.NewUnstartedServer(nil)
	t.Cleanup(e.hs.Close)
	_, port, _ := net.SplitHostPort(e.hs.Listener.Addr().String())
	origin := "http://localhost:" + port
	e.srv, err = New(Config{
		Gateway: e.gw, Log: logAPI, LogKey: verifier, DataDir: filepath.Join(dir, "console"),
		Origin: origin, Approvers: reg,
		People: func(id string) (Person, bool) { p, ok := e.people[id]; return p, ok },
		Refused: func(_ context.Context, caller, code, _ string) error {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.refusals = append(e.refusals, caller+" "+code)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /test-login", func(w http.ResponseWriter, r *http.Request) {
		p, ok := e.people[r.URL.Query().Get("as")]
		if !ok {
			http.Error(w, "unknown person", http.StatusForbidden)
			return
		}
		e.srv.startSession(w, r, p)
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
	})
	mux.Handle("/", e.srv)
	e.hs.Config.Handler = mux
	e.hs.Start()
	e.hs.URL = origin
	return e
}

// submit asks the gateway for action (JSON) as agent, with the agent's
// instruction and reasoning.
func (e *testEnv) submit(agent, action, instruction, reasoning string) *gateway.Result {
	e.t.Helper()
	v, err := strictjson.Decode([]byte(action), strictjson.Limits{})
	if err != nil {
		e.t.Fatal(err)
	}
	a, err := policy.NewAction(v)
	if err != nil {
		e.t.Fatal(err)
	}
	res, err := e.gw.Submit(context.Background(), &gateway.Request{Agent: policy.Agent{ID: agent}, Session: "s-1", Action: a,
		Instruction: instruction, Reasoning: reasoning}, true)
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

// pending returns the parked request id.
func (e *testEnv) pending(id string) approval.Request {
	e.t.Helper()
	for _, p := range e.gw.Pending() {
		if p.Request.ID == id {
			return p.Request
		}
	}
	e.t.Fatalf("request %s is not pending", id)
	return approval.Request{}
}

// vote has approver sign verdict v on parked request id.
func (e *testEnv) vote(approver, id string, v approval.Verdict, reason string) {
	e.t.Helper()
	r := e.pending(id)
	b, err := approval.Sign(r.Statement(v, reason), e.signers[approver])
	if err != nil {
		e.t.Fatal(err)
	}
	if v == approval.Approve {
		_, err = e.gw.Approve(context.Background(), approver, id, b)
	} else {
		_, err = e.gw.Reject(context.Background(), approver, id, b)
	}
	if err != nil {
		e.t.Fatal(err)
	}
}

// checkpoint signs a checkpoint over the whole log.
func (e *testEnv) checkpoint() {
	e.t.Helper()
	if _, err := e.cp.Checkpoint(); err != nil {
		e.t.Fatal(err)
	}
}

// client returns an HTTP client signed in as id (none for ""), which does
// not follow redirects.
func (e *testEnv) client(id string) *http.Client {
	e.t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if id != "" {
		resp, err := c.Get(e.hs.URL + "/test-login?as=" + url.QueryEscape(id))
		if err != nil {
			e.t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			e.t.Fatalf("sign in %s: %s", id, resp.Status)
		}
	}
	return c
}

// get fetches path with c and returns the status, the headers and the body.
func (e *testEnv) get(c *http.Client, path string) (int, http.Header, string) {
	e.t.Helper()
	resp, err := c.Get(e.hs.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}
