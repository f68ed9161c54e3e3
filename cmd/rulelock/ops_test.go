package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/httpapi"
)

// opsGateway is a gateway started from a config file with configured
// agents and approvers and a real HTTP upstream, for the reload and freeze
// tests.
type opsGateway struct {
	t        *testing.T
	data     string
	cfgPath  string
	url      string
	stop     func() error
	stderr   *syncBuffer
	tokens   map[string]string // agent or approver id -> bearer token
	keys     map[string]string // approver id -> key file
	vkeys    map[string]string // approver id -> verifier key
	upstream *upstreamRecorder
}

// upstreamRecorder is the executors' upstream: it records every body.
type upstreamRecorder struct {
	mu     sync.Mutex
	bodies []string
	srv    *httptest.Server
}

func (u *upstreamRecorder) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string{}, u.bodies...)
}

// newOpsGateway writes keys, tokens and the config for the agents and
// approvers given, and starts the gateway.
func newOpsGateway(t *testing.T, agents, approvers []string) *opsGateway {
	t.Helper()
	up := &upstreamRecorder{}
	up.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		up.mu.Lock()
		up.bodies = append(up.bodies, string(b))
		up.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.srv.Close)
	data := t.TempDir()
	o := &opsGateway{t: t, data: data, cfgPath: filepath.Join(data, "rulelock.yaml"), tokens: map[string]string{}, keys: map[string]string{},
		vkeys: map[string]string{}, upstream: up}
	for _, id := range append(append([]string{}, agents...), approvers...) {
		var raw [24]byte
		rand.Read(raw[:])
		o.tokens[id] = "rl_" + hex.EncodeToString(raw[:])
	}
	for _, id := range approvers {
		skey, vkey, err := note.GenerateKey(rand.Reader, id)
		if err != nil {
			t.Fatal(err)
		}
		o.keys[id], o.vkeys[id] = filepath.Join(data, id+".key"), vkey
		if err := os.WriteFile(o.keys[id], []byte(skey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	o.writeConfig(agents, approvers)
	o.start()
	return o
}

// writeConfig writes the config file with these agents and approvers.
func (o *opsGateway) writeConfig(agents, approvers []string) {
	o.t.Helper()
	policyDir, _ := filepath.Abs("../../examples/payments")
	var b strings.Builder
	fmt.Fprintf(&b, "policy: %s\ndata_dir: %s\nlisten: 127.0.0.1:0\norigin: test.rulelock/log\ncheckpoint_interval: 50ms\n", policyDir, o.data)
	fmt.Fprintf(&b, "executors:\n  transfer:\n    method: POST\n    url: %s/transfer\n    headers:\n      Authorization: {value: Bearer upstream-secret}\n", o.upstream.srv.URL)
	b.WriteString("freeze:\n  unfreeze_approvers: 2\nagents:\n")
	for _, id := range agents {
		sum := httpapi.HashToken(o.tokens[id])
		fmt.Fprintf(&b, "  - id: %s\n    roles: [payments]\n    token_sha256: %s\n", id, hex.EncodeToString(sum[:]))
	}
	b.WriteString("approvers:\n")
	for _, id := range approvers {
		sum := httpapi.HashToken(o.tokens[id])
		fmt.Fprintf(&b, "  - id: %s\n    groups: [payments-approvers, treasury]\n    key: %s\n    token_sha256: %s\n", id, o.vkeys[id], hex.EncodeToString(sum[:]))
	}
	if err := os.WriteFile(o.cfgPath, []byte(b.String()), 0o600); err != nil {
		o.t.Fatal(err)
	}
}

// start starts the gateway as rulelock serve --config would.
func (o *opsGateway) start() {
	o.t.Helper()
	b, err := os.ReadFile(o.cfgPath)
	if err != nil {
		o.t.Fatal(err)
	}
	cfg, err := parseConfig(o.cfgPath, b)
	if err != nil {
		o.t.Fatal(err)
	}
	if err := cfg.defaults(); err != nil {
		o.t.Fatal(err)
	}
	o.stderr = &syncBuffer{}
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: o.stderr, getenv: func(string) string { return "" }}
	g, err := startGateway(context.Background(), e, cfg, false)
	if err != nil {
		o.t.Fatalf("start: %v\n%s", err, o.stderr)
	}
	g.cfgPath, g.cfgSum = o.cfgPath, sha256.Sum256(b)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.serve(ctx) }()
	o.stop = func() error { cancel(); return <-done }
	o.url = "http://" + g.ln.Addr().String()
	for i := 0; i < 500; i++ { // until it serves: readyz may be 503 while frozen
		if resp, err := http.Get(o.url + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
	}
}

// cli runs rulelock with RULELOCK_TOKEN set to who's token.
func (o *opsGateway) cli(who string, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(k string) string {
		if k == "RULELOCK_TOKEN" {
			return o.tokens[who]
		}
		return ""
	}}
	code = run(context.Background(), e, args)
	return code, out.String(), errOut.String()
}

// do sends a request as who and returns the status and the decoded reply.
func (o *opsGateway) do(who, method, path, body string) (int, map[string]any) {
	o.t.Helper()
	req, _ := http.NewRequest(method, o.url+path, strings.NewReader(body))
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+o.tokens[who])
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		o.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// entries reads the whole log (the gateway stopped).
func (o *opsGateway) entries() []*audit.Entry {
	o.t.Helper()
	l, err := audit.Open(filepath.Join(o.data, "log"), audit.Options{})
	if err != nil {
		o.t.Fatal(err)
	}
	defer l.Close()
	var out []*audit.Entry
	for i := int64(0); i < l.Size(); i++ {
		raw, err := l.ReadEntry(i)
		if err != nil {
			o.t.Fatal(err)
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			o.t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// verify runs rulelock verify, plain and with --replay, on the stopped
// gateway's log; both must pass.
func (o *opsGateway) verify() {
	o.t.Helper()
	logDir, pub := filepath.Join(o.data, "log"), filepath.Join(o.data, "log.pub")
	for _, args := range [][]string{{"verify", logDir, "--key", pub}, {"verify", logDir, "--key", pub, "--replay", "--allow-development", "--config", o.cfgPath}} {
		if out, code, stderr := cliCode(o.t, o.data, args...); code != 0 {
			o.t.Errorf("%v: exit %d\n%s\n%s", args, code, out, stderr)
		}
	}
}

// answers is what a stream of agent requests got back.
type answers struct {
	mu      sync.Mutex
	ids     map[string]int // request id -> HTTP status
	byCode  map[string]int // error code -> count
	statusN map[int]int
}

func newAnswers() *answers {
	return &answers{ids: map[string]int{}, byCode: map[string]int{}, statusN: map[int]int{}}
}

// traffic sends transfers as agent from workers goroutines until stop is
// closed or the token stops authenticating; each to field carries tag.
func (o *opsGateway) traffic(agent, tag string, workers int, a *answers, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	var n atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := n.Add(1)
				body := fmt.Sprintf(`{"action": {"type": "transfer", "amount": 1, "to": "%s-%d"}}`, tag, i)
				req, _ := http.NewRequest("POST", o.url+"/v1/actions", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+o.tokens[agent])
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					a.mu.Lock()
					a.byCode["transport: "+err.Error()]++
					a.mu.Unlock()
					return
				}
				var out struct {
					RequestID string `json:"request_id"`
					Error     struct{ Code string }
				}
				json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				a.mu.Lock()
				a.statusN[resp.StatusCode]++
				if out.RequestID != "" {
					a.ids[out.RequestID] = resp.StatusCode
				}
				if out.Error.Code != "" {
					a.byCode[out.Error.Code]++
				}
				a.mu.Unlock()
				if resp.StatusCode == http.StatusUnauthorized {
					return
				}
			}
		}()
	}
	return &wg
}

// decisionsOf returns the decision entries of agent, by request id.
func decisionsOf(es []*audit.Entry, agent string) map[string]int {
	m := map[string]int{}
	for _, e := range es {
		if e.Kind == audit.KindDecision && e.Agent == agent {
			m[e.RequestID]++
		}
	}
	return m
}

// checkNoDecisionLost: every answered request has exactly one decision
// entry in logged (decisionsOf), and every one there was answered.
func checkNoDecisionLost(t *testing.T, logged map[string]int, a *answers) {
	t.Helper()
	for id, n := range logged {
		if n != 1 {
			t.Errorf("request %s has %d decision entries", id, n)
		}
		if _, ok := a.ids[id]; !ok {
			t.Errorf("request %s is in the log and was never answered", id)
		}
	}
	for id := range a.ids {
		if logged[id] != 1 {
			t.Errorf("request %s was answered and has %d decision entries", id, logged[id])
		}
	}
	if len(a.ids) == 0 {
		t.Error("no request was answered")
	}
}

// waitAnswers waits until a holds at least n answered requests.
func waitAnswers(t *testing.T, a *answers, n int) {
	t.Helper()
	for i := 0; i < 6000; i++ {
		a.mu.Lock()
		got := len(a.ids)
		a.mu.Unlock()
		if got >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("fewer than %d answers after a minute", n)
}

// approve signs and submits who's approval of parked request id.
func (o *opsGateway) approve(who, id string) (int, map[string]any) {
	o.t.Helper()
	return o.do(who, "POST", "/v1/requests/"+id+"/approvals", o.approval(who, id))
}

// approval is who's signed approval of pending request id, as the body
// of POST /v1/requests/{id}/approvals.
func (o *opsGateway) approval(who, id string) string {
	o.t.Helper()
	status, pending := o.do(who, "GET", "/v1/approvals", "")
	if status != 200 {
		o.t.Fatalf("GET /v1/approvals as %s: %d %v", who, status, pending)
	}
	stmt := ""
	list, _ := pending["pending"].([]any)
	for _, p := range list {
		p := p.(map[string]any)
		if p["request"].(map[string]any)["id"] == id {
			stmt = p["approve_statement"].(string)
		}
	}
	if stmt == "" {
		o.t.Fatalf("request %s is not pending: %v", id, pending)
	}
	signer, err := audit.LoadKeyFile(o.keys[who])
	if err != nil {
		o.t.Fatal(err)
	}
	signed, err := note.Sign(&note.Note{Text: stmt}, signer)
	if err != nil {
		o.t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{"note": string(signed)})
	return string(b)
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
