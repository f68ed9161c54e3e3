package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/passkey/passkeytest"
)

// consoleGateway is a real `rulelock serve` (in-process) with the console
// enabled, the payments example's policy, three passkey-only approvers
// (alice and bob in treasury, dave in risk), an agent, and a real HTTP
// upstream for trades that counts its calls.
type consoleGateway struct {
	g          *running
	stop       func() error
	data       string
	config     string // the config file
	origin     string // http://localhost:PORT
	api        string // http://127.0.0.1:PORT
	agentToken string
	trades     *atomic.Int64
}

func startConsoleGateway(t *testing.T) *consoleGateway {
	t.Helper()
	data := t.TempDir()
	var trades atomic.Int64
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		trades.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"settled":true}`))
	}))
	t.Cleanup(upstream.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	const token = "agent-42-secret-token-for-the-console-test"
	sum := sha256.Sum256([]byte(token))
	policyDir, _ := filepath.Abs("../../examples/payments")
	origin := fmt.Sprintf("http://localhost:%d", port)
	cfgText := fmt.Sprintf(`listen: 127.0.0.1:%d
data_dir: %s
policy: %s
origin: test.rulelock/log
checkpoint_interval: 50ms
agents:
  - id: agent-42
    roles: [payments]
    token_sha256: %s
approvers:
  - id: alice
    groups: [treasury]
  - id: bob
    groups: [treasury]
  - id: dave
    groups: [risk]
auditors:
  - id: audrey
    token_sha256: %s
executors:
  trade: {method: POST, url: %s}
console:
  origin: %s
`, port, data, policyDir, hex.EncodeToString(sum[:]), auditorTokenHash, upstream.URL, origin)
	cfgPath := filepath.Join(data, "rulelock.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := readConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &syncBuffer{}, getenv: func(string) string { return "" }}
	g, stop := runServing(t, e, cfg, false)
	api := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitReady(t, api)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	return &consoleGateway{g: g, stop: func() error { stopped = true; return stop() }, data: data, config: cfgPath,
		origin: origin, api: api, agentToken: token, trades: &trades}
}

// restart stops the gateway and starts it again on the same config and
// data directory.
func (cg *consoleGateway) restart(t *testing.T) {
	t.Helper()
	if err := cg.stop(); err != nil {
		t.Fatal(err)
	}
	cfg, err := readConfig(cg.config)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &syncBuffer{}, getenv: func(string) string { return "" }}
	g, stop := runServing(t, e, cfg, false)
	waitReady(t, cg.api)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	cg.g, cg.stop = g, func() error { stopped = true; return stop() }
}

// auditorTokenHash is the SHA-256 of audrey's API token, which the tests
// never use: the console takes no tokens.
var auditorTokenHash = strings.Repeat("ab", 32)

// rl runs the rulelock CLI in-process and returns its output and exit code.
func rl(t *testing.T, args ...string) (stdout string, code int, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	code = run(context.Background(), e, args)
	return out.String(), code, errb.String()
}

// enrolLink runs `rulelock console enrol ID --config FILE` and returns the
// link it prints.
func (cg *consoleGateway) enrolLink(t *testing.T, id string) string {
	t.Helper()
	out, code, stderr := rl(t, "console", "enrol", "--config", cg.config, id)
	if code != 0 {
		t.Fatalf("console enrol %s: exit %d: %s", id, code, stderr)
	}
	link := strings.TrimSpace(out)
	if !strings.HasPrefix(link, cg.origin+"/console/enrol#") {
		t.Fatalf("console enrol printed %q, want a link under %s/console/enrol#", link, cg.origin)
	}
	return link
}

// park submits a $750,000 trade as the agent and returns its request id:
// parked for two treasury approvers.
func (cg *consoleGateway) park(t *testing.T, counterparty string) string {
	t.Helper()
	status, out := postJSON(t, cg.api+"/v1/actions", cg.agentToken, `{"action": {"type": "trade", "amount": 750000, "counterparty": "`+counterparty+`"}}`)
	if status != 200 && status != 202 || decisionOf(out) != "require_approval" {
		t.Fatalf("the $750,000 trade: %d %v, want require_approval", status, out)
	}
	return out["request_id"].(string)
}

// notes returns the messages and callers of the log's note entries
// (read without the log's lock, as verify does).
func (cg *consoleGateway) notes(t *testing.T) []audit.Entry {
	t.Helper()
	l, err := audit.OpenSnapshot(filepath.Join(cg.data, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var out []audit.Entry
	for i := int64(0); i < l.Size(); i++ {
		raw, err := l.ReadEntry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == audit.KindNote {
			out = append(out, *e)
		}
	}
	return out
}

// softBrowser is a browser played by Go: a cookie jar, the console's
// origin on every POST, and a software authenticator (passkeytest) that
// makes real WebAuthn registrations and assertions. The Chromium test
// (TestConsoleBrowser) drives the same routes with a real browser.
type softBrowser struct {
	t      *testing.T
	cg     *consoleGateway
	client *http.Client
	csrf   string
	auth   *passkeytest.Authenticator
}

func (cg *consoleGateway) browser(t *testing.T, approver string) *softBrowser {
	jar, _ := cookiejar.New(nil)
	return &softBrowser{t: t, cg: cg, client: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		auth: passkeytest.New(approver, cg.origin)}
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`)

// page GETs path and keeps the page's CSRF token.
func (b *softBrowser) page(path string) string {
	b.t.Helper()
	resp, err := b.client.Get(b.cg.api + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		b.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	m := csrfMeta.FindSubmatch(body)
	if m == nil {
		b.t.Fatalf("GET %s: no csrf-token meta in\n%s", path, body)
	}
	b.csrf = string(m[1])
	return string(body)
}

// post POSTs body as JSON with the CSRF token csrf ("" for none) and
// header hdr (name, value pairs) and returns the status and the body.
func (b *softBrowser) post(path string, body any, csrf string, hdr ...string) (int, []byte) {
	b.t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", b.cg.api+path, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", b.cg.origin)
	if csrf != "" {
		req.Header.Set("X-CSRF-Token", csrf)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (b *softBrowser) postOK(path string, body any) map[string]any {
	b.t.Helper()
	status, out := b.post(path, body, b.csrf)
	if status != 200 {
		b.t.Fatalf("POST %s: %d %s", path, status, out)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		b.t.Fatalf("POST %s: %v: %s", path, err, out)
	}
	return m
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func unb64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("base64url %q: %v", s, err)
	}
	return b
}

// enrol follows the one-time link: the enrolment page, begin, the
// authenticator's registration, finish (which signs the approver in).
func (b *softBrowser) enrol(link string) {
	b.t.Helper()
	_, token, _ := strings.Cut(link, "#")
	b.page("/console/enrol")
	creation := b.postOK("/console/api/enrol/begin", map[string]string{"token": token})
	pk := creation["publicKey"].(map[string]any)
	att, cd := b.auth.Register(unb64(b.t, pk["challenge"].(string)))
	id := b64(b.auth.Credential.ID)
	done := b.postOK("/console/api/enrol/finish", map[string]any{"id": id, "rawId": id, "type": "public-key",
		"response": map[string]any{"attestationObject": b64(att), "clientDataJSON": b64(cd)}})
	if done["fingerprint"] != b.auth.Credential.Fingerprint() {
		b.t.Fatalf("enrolment fingerprint %v, want %s", done["fingerprint"], b.auth.Credential.Fingerprint())
	}
	b.csrf = done["csrf"].(string)
}

// login signs in with the passkey: the sign-in page, begin, the
// authenticator's assertion, finish.
func (b *softBrowser) login() (int, []byte) {
	b.t.Helper()
	b.page("/console/login")
	begin := b.postOK("/console/api/login/begin", map[string]string{})
	pk := begin["publicKey"].(map[string]any)
	status, out := b.post("/console/api/login/finish", b.finishBody("", unb64(b.t, begin["nonce"].(string)), unb64(b.t, pk["challenge"].(string))), b.csrf)
	if status == 200 {
		var m map[string]any
		json.Unmarshal(out, &m)
		b.csrf = m["csrf"].(string)
	}
	return status, out
}

// voteBegin starts a vote and returns the nonce and the challenge.
func (b *softBrowser) voteBegin(id, verdict, reason string) (nonce, challenge []byte) {
	b.t.Helper()
	begin := b.postOK("/console/api/vote/begin", map[string]string{"request": id, "verdict": verdict, "reason": reason})
	pk := begin["publicKey"].(map[string]any)
	return unb64(b.t, begin["nonce"].(string)), unb64(b.t, pk["challenge"].(string))
}

// finishBody is what passkey.js posts to vote/finish.
func (b *softBrowser) finishBody(id string, nonce, challenge []byte) map[string]any {
	a := b.auth.AssertChallenge(challenge, nonce)
	return map[string]any{"nonce": b64(nonce), "request": id, "credential": map[string]any{
		"id": b64(a.Credential), "rawId": b64(a.Credential), "type": "public-key",
		"response": map[string]any{"authenticatorData": b64(a.AuthenticatorData), "clientDataJSON": b64(a.ClientDataJSON), "signature": b64(a.Signature)}}}
}

// vote approves or rejects request id with the passkey and returns the
// status and reply of finish.
func (b *softBrowser) vote(id, verdict, reason string) (int, []byte) {
	b.t.Helper()
	nonce, challenge := b.voteBegin(id, verdict, reason)
	return b.post("/console/api/vote/finish", b.finishBody(id, nonce, challenge), b.csrf)
}

// TestConsolePasskeyRefusals proves, against a real gateway and log with a
// software authenticator, that every attack the issue names is refused
// and logged with its reason, attributed to the caller, and that the
// approvals that are not refused execute the trade once and verify
// offline.
func TestConsolePasskeyRefusals(t *testing.T) {
	cg := startConsoleGateway(t)
	alice, bob, dave := cg.browser(t, "alice"), cg.browser(t, "bob"), cg.browser(t, "dave")
	alice.enrol(cg.enrolLink(t, "alice"))
	bob.enrol(cg.enrolLink(t, "bob"))
	dave.enrol(cg.enrolLink(t, "dave"))
	trade, other := cg.park(t, "acme"), cg.park(t, "globex")

	type refusal struct{ caller, code string }
	var want []refusal
	expect := func(name string, status int, body []byte, wantStatus int, caller, code string) {
		t.Helper()
		f := strings.Fields(code) // the answer says the code, the note says more
		if status != wantStatus || !bytes.HasPrefix(body, []byte(f[len(f)-1]+":")) {
			t.Errorf("%s: got %d %s, want %d %s", name, status, body, wantStatus, code)
		}
		want = append(want, refusal{caller, code})
	}

	// No CSRF token, then a wrong one.
	s, body := alice.post("/console/api/vote/begin", map[string]string{"request": trade, "verdict": "approve"}, "")
	expect("no CSRF token", s, body, 403, "alice", "console_refused csrf")
	s, body = alice.post("/console/api/vote/begin", map[string]string{"request": trade, "verdict": "approve"}, "wrong"+alice.csrf)
	expect("a wrong CSRF token", s, body, 403, "alice", "console_refused csrf")
	// The right token from another origin.
	s, body = alice.post("/console/api/vote/finish", map[string]string{}, alice.csrf, "Origin", "https://evil.example")
	expect("another origin", s, body, 403, "alice", "console_refused csrf")
	// Logged out: a browser without a session.
	anon := cg.browser(t, "nobody")
	s, body = anon.post("/console/api/vote/begin", map[string]string{"request": trade, "verdict": "approve"}, "x")
	expect("logged out", s, body, 401, "", "console_refused signed_out")
	// An agent's bearer token, on a page and on an API route.
	s, body = anon.post("/console/api/vote/begin", map[string]string{}, "", "Authorization", "Bearer "+cg.agentToken)
	expect("an agent token", s, body, 403, "agent-42", "console_refused bearer_token")
	// An assertion made for the other request.
	nonce, challenge := alice.voteBegin(other, "approve", "")
	s, body = alice.post("/console/api/vote/finish", alice.finishBody(trade, nonce, challenge), alice.csrf)
	expect("an assertion for another request", s, body, 403, "alice", "console_refused cross_request")
	// A wrong-group approver: the gateway's approval rules refuse it.
	s, body = dave.vote(trade, "approve", "")
	expect("an approver of the wrong group", s, body, 409, "dave", "approval_refused approve not_in_group")

	// Alice approves; replaying her assertion is refused.
	nonce, challenge = alice.voteBegin(trade, "approve", "")
	finish := alice.finishBody(trade, nonce, challenge)
	if s, body := alice.post("/console/api/vote/finish", finish, alice.csrf); s != 200 {
		t.Fatalf("alice's approval: %d %s", s, body)
	}
	s, body = alice.post("/console/api/vote/finish", finish, alice.csrf)
	expect("a replayed assertion", s, body, 403, "alice", "console_refused bad_nonce")
	// Bob's, on bob's session with alice's passkey assertion: not his passkey.
	nonce, challenge = bob.voteBegin(trade, "approve", "")
	stolen := alice.finishBody(trade, nonce, challenge)
	s, body = bob.post("/console/api/vote/finish", stolen, bob.csrf)
	expect("another approver's passkey", s, body, 403, "bob", "console_refused not_your_passkey")
	if n := cg.trades.Load(); n != 0 {
		t.Fatalf("the upstream was called %d times before the quorum", n)
	}
	s, body = bob.vote(trade, "approve", "")
	if s != 200 || !bytes.Contains(body, []byte(`"decision":"approved"`)) {
		t.Fatalf("bob's approval (the quorum): %d %s", s, body)
	}
	if n := cg.trades.Load(); n != 1 {
		t.Fatalf("the upstream was called %d times, want exactly 1", n)
	}
	// Rejecting the other request with a passkey ends it.
	if s, body := bob.vote(other, "reject", "counterparty not verified"); s != 200 || !bytes.Contains(body, []byte("rejected")) {
		t.Fatalf("bob's rejection: %d %s", s, body)
	}
	// Logged out after logout.
	if s, body := bob.post("/console/logout", nil, bob.csrf); s != http.StatusSeeOther {
		t.Fatalf("logout: %d %s", s, body)
	}
	s, body = bob.post("/console/api/vote/begin", map[string]string{"request": other, "verdict": "approve"}, bob.csrf)
	expect("after logout", s, body, 401, "", "console_refused signed_out")

	if err := cg.stop(); err != nil {
		t.Fatal(err)
	}
	notes := cg.notes(t)
	for _, w := range want {
		found := false
		for _, n := range notes {
			if strings.HasPrefix(n.Message, w.code) && n.Approver == w.caller {
				found = true
			}
		}
		if !found {
			t.Errorf("no note entry %q attributed to %q in the log", w.code, w.caller)
		}
	}
	enrolled := 0
	for _, n := range notes {
		if strings.HasPrefix(n.Message, "passkey_enrolled ") {
			enrolled++
		}
	}
	if enrolled != 3 {
		t.Errorf("%d enrolment entries, want 3", enrolled)
	}
	out, code, stderr := rl(t, "verify", filepath.Join(cg.data, "log"), "--key", filepath.Join(cg.data, "log.pub"), "--replay", "--allow-development", "--config", cg.config)
	if code != 0 || !strings.Contains(out, "3 passkeys enrolled, 2 passkey (WebAuthn) approvals verified") {
		t.Fatalf("verify --replay: exit %d\n%s%s", code, out, stderr)
	}
}

// TestConsolePasskeysSurviveRestart: the gateway learns its passkeys again
// from the log's enrolment entries; a passkey nobody enrolled signs no one
// in; the enrolment link works once.
func TestConsolePasskeysSurviveRestart(t *testing.T) {
	cg := startConsoleGateway(t)
	alice, bob := cg.browser(t, "alice"), cg.browser(t, "bob")
	link := cg.enrolLink(t, "alice")
	alice.enrol(link)
	bob.enrol(cg.enrolLink(t, "bob"))
	trade := cg.park(t, "acme")
	if s, body := alice.vote(trade, "approve", ""); s != 200 {
		t.Fatalf("alice's approval: %d %s", s, body)
	}
	cg.restart(t)
	// Sessions live in memory: after the restart alice signs in again.
	if s, body := alice.login(); s != 200 {
		t.Fatalf("alice's sign-in after the restart: %d %s", s, body)
	}
	if s, body := bob.login(); s != 200 {
		t.Fatalf("bob's sign-in after the restart: %d %s", s, body)
	}
	if s, body := bob.vote(trade, "approve", ""); s != 200 || !bytes.Contains(body, []byte(`"decision":"approved"`)) {
		t.Fatalf("bob's approval after the restart: %d %s", s, body)
	}
	if n := cg.trades.Load(); n != 1 {
		t.Fatalf("the upstream was called %d times, want 1", n)
	}
	mallory := cg.browser(t, "alice") // a passkey of her own, never enrolled
	if s, body := mallory.login(); s != 403 || !bytes.HasPrefix(body, []byte("unknown_passkey:")) {
		t.Fatalf("an unenrolled passkey's sign-in: %d %s, want 403 unknown_passkey", s, body)
	}
	again := cg.browser(t, "alice")
	_, token, _ := strings.Cut(link, "#")
	again.page("/console/enrol")
	if s, body := again.post("/console/api/enrol/begin", map[string]string{"token": token}, again.csrf); s != 403 || !bytes.HasPrefix(body, []byte("bad_link:")) {
		t.Fatalf("the used link again: %d %s, want 403 bad_link", s, body)
	}
}

// TestConsoleEnrolCLI: rulelock console enrol refuses what it cannot make
// a link for, with a clear message.
func TestConsoleEnrolCLI(t *testing.T) {
	dir := t.TempDir()
	noConsole := filepath.Join(dir, "plain.yaml")
	os.WriteFile(noConsole, []byte("data_dir: "+dir+"\npolicy: ../../examples/payments\n"), 0o600)
	withConsole := filepath.Join(dir, "console.yaml")
	os.WriteFile(withConsole, []byte("data_dir: "+dir+"\npolicy: ../../examples/payments\napprovers:\n  - {id: alice, groups: [treasury]}\nconsole:\n  origin: https://rulelock.example.com\n"), 0o600)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"console"}, "want: rulelock console enrol ID"},
		{[]string{"console", "enrol", "--config", noConsole, "alice"}, "the console is not enabled"},
		{[]string{"console", "enrol", "--config", withConsole, "bob"}, `no approver or auditor "bob"`},
		{[]string{"console", "enrol", "--data", dir, "--origin", "rulelock.example.com", "alice"}, "--origin"},
		{[]string{"console", "enrol", "--data", dir, "alice"}, "give --config, or --data and --origin"},
		{[]string{"console", "enrol", "--config", withConsole, "--ttl", "0s", "alice"}, "--ttl"},
		{[]string{"console", "enrol", "--config", withConsole, "al ice"}, "invalid id"},
	} {
		out, code, stderr := rl(t, c.args...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("rulelock %s: exit %d, %q %q; want a failure saying %q", strings.Join(c.args, " "), code, out, stderr, c.want)
		}
	}
	out, code, stderr := rl(t, "console", "enrol", "--config", withConsole, "alice")
	if code != 0 || !strings.HasPrefix(out, "https://rulelock.example.com/console/enrol#") {
		t.Fatalf("console enrol: exit %d %q %q", code, out, stderr)
	}
}

// TestConsoleAuditorSignIn: an auditor enrols a passkey through a
// one-time link and signs in with it (before and after a restart), and
// cannot vote; the enrolment is in the log.
func TestConsoleAuditorSignIn(t *testing.T) {
	cg := startConsoleGateway(t)
	audrey := cg.browser(t, "audrey")
	audrey.enrol(cg.enrolLink(t, "audrey"))
	trade := cg.park(t, "acme")
	s, body := audrey.post("/console/api/vote/begin", map[string]string{"request": trade, "verdict": "approve"}, audrey.csrf)
	if s != 403 || !bytes.HasPrefix(body, []byte("not_an_approver:")) {
		t.Fatalf("an auditor's vote: %d %s, want 403 not_an_approver", s, body)
	}
	cg.restart(t)
	if s, body := audrey.login(); s != 200 {
		t.Fatalf("audrey's sign-in after the restart: %d %s", s, body)
	}
	if err := cg.stop(); err != nil {
		t.Fatal(err)
	}
	var enrolled, refused bool
	for _, n := range cg.notes(t) {
		enrolled = enrolled || strings.HasPrefix(n.Message, "passkey_enrolled_auditor audrey ") && n.Approver == "audrey"
		refused = refused || strings.HasPrefix(n.Message, "console_refused not_an_approver") && n.Approver == "audrey"
	}
	if !enrolled || !refused {
		t.Fatalf("the log lacks audrey's enrolment (%v) or her refused vote (%v)", enrolled, refused)
	}
	out, code, stderr := rl(t, "verify", filepath.Join(cg.data, "log"), "--key", filepath.Join(cg.data, "log.pub"), "--replay", "--allow-development", "--config", cg.config)
	if code != 0 {
		t.Fatalf("verify --replay with an auditor's enrolment: exit %d\n%s%s", code, out, stderr)
	}
}
