package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/passkey"
)

// The full ceremonies run against a real gateway and log in cmd/rulelock
// (TestConsolePasskeyRefusals with a software authenticator,
// TestConsoleBrowser in Chromium). These are the console's own checks, in
// front of any gateway.

const testOrigin = "http://localhost:8443"

type refusal struct{ caller, code string }

type recorded struct {
	mu   sync.Mutex
	list []refusal
	err  error
}

func (r *recorded) refused(_ context.Context, caller, code, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.list = append(r.list, refusal{caller, code})
	return nil
}

func newTestServer(t *testing.T) (*Server, *recorded) {
	t.Helper()
	reg, err := approval.NewRegistry([]approval.Approver{{ID: "alice", Groups: []string{"treasury"}}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorded{}
	s, err := New(Config{Origin: testOrigin, DataDir: t.TempDir(), Approvers: reg, Refused: rec.refused,
		People: func(id string) (Person, bool) {
			return Person{ID: id, Approver: true, Groups: []string{"treasury"}}, id == "alice"
		},
		Bearer: func(tok string) (string, bool) { return "agent-42", tok == "agent-token" },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, rec
}

func serve(s *Server, method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "http://localhost:8443"+path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func TestRefusalsAreRecorded(t *testing.T) {
	s, rec := newTestServer(t)
	page := serve(s, "GET", "/console/login", "")
	if page.Code != 200 {
		t.Fatalf("GET /console/login: %d", page.Code)
	}
	var pre string
	for _, c := range page.Result().Cookies() {
		if c.Name == preCookie {
			pre = c.Value
		}
	}
	if pre == "" || !strings.Contains(page.Body.String(), `<meta name="csrf-token" content="`+pre+`">`) {
		t.Fatalf("the login page has no pre-session token in its cookie and meta:\n%s", page.Body)
	}
	if got := page.Header().Get("Content-Security-Policy"); !strings.Contains(got, "script-src 'self'") {
		t.Fatalf("CSP %q", got)
	}
	cookie := preCookie + "=" + pre
	cases := []struct {
		name   string
		method string
		path   string
		hdr    []string
		status int
		want   refusal
	}{
		{"an agent's token on a page", "GET", "/console/login", []string{"Authorization", "Bearer agent-token"}, 403, refusal{"agent-42", "bearer_token"}},
		{"an unknown token", "POST", "/console/api/vote/begin", []string{"Authorization", "Bearer nope"}, 403, refusal{"", "bearer_token"}},
		{"sign-in without the pre-session token", "POST", "/console/api/login/begin", []string{"Cookie", cookie}, 403, refusal{"", "csrf"}},
		{"sign-in with another token", "POST", "/console/api/login/begin", []string{"Cookie", cookie, "X-CSRF-Token", pre + "x"}, 403, refusal{"", "csrf"}},
		{"sign-in from another origin", "POST", "/console/api/login/begin", []string{"Cookie", cookie, "X-CSRF-Token", pre, "Origin", "https://evil.example"}, 403, refusal{"", "csrf"}},
		{"sign-in from a cross-site page", "POST", "/console/api/login/begin", []string{"Cookie", cookie, "X-CSRF-Token", pre, "Sec-Fetch-Site", "cross-site"}, 403, refusal{"", "csrf"}},
		{"a vote while signed out", "POST", "/console/api/vote/begin", nil, 401, refusal{"", "signed_out"}},
		{"a vote finish while signed out", "POST", "/console/api/vote/finish", nil, 401, refusal{"", "signed_out"}},
		{"logout while signed out", "POST", "/console/logout", nil, 401, refusal{"", "signed_out"}},
		{"an enrolment without a token", "POST", "/console/api/enrol/begin", nil, 403, refusal{"", "csrf"}},
		{"an unknown enrolment link", "POST", "/console/api/enrol/begin", []string{"Cookie", cookie, "X-CSRF-Token", pre}, 403, refusal{"", "bad_link"}},
		{"an enrolment finish with none begun", "POST", "/console/api/enrol/finish", []string{"Cookie", cookie, "X-CSRF-Token", pre}, 403, refusal{"", "bad_nonce"}},
		{"a sign-in finish with an unknown nonce", "POST", "/console/api/login/finish", []string{"Cookie", cookie, "X-CSRF-Token", pre}, 403, refusal{"", "bad_nonce"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := `{}`
			switch c.path {
			case "/console/api/enrol/begin":
				body = `{"token": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`
			case "/console/api/login/finish":
				body = `{"nonce": "bm9wZQ", "credential": {}}`
			}
			rec.list = nil
			w := serve(s, c.method, c.path, body, c.hdr...)
			if w.Code != c.status || !strings.HasPrefix(w.Body.String(), c.want.code+":") {
				t.Fatalf("got %d %q, want %d %s", w.Code, w.Body, c.status, c.want.code)
			}
			if len(rec.list) != 1 || rec.list[0] != c.want {
				t.Fatalf("recorded %v, want [%v]", rec.list, c.want)
			}
		})
	}
}

// TestRefusalNotRecorded: a refusal the log cannot keep is answered 503,
// not as if it were kept.
func TestRefusalNotRecorded(t *testing.T) {
	s, rec := newTestServer(t)
	rec.err = errors.New("disk full")
	if w := serve(s, "POST", "/console/api/vote/begin", `{}`); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("got %d %q, want 503", w.Code, w.Body)
	}
}

// TestSignInBegin: with the pre-session token the sign-in starts: a
// 64-byte challenge (the sign-in statement's hash and a nonce) for the
// console's RP ID, user verification required.
func TestSignInBegin(t *testing.T) {
	s, _ := newTestServer(t)
	page := serve(s, "GET", "/console/login", "")
	pre := page.Result().Cookies()[0].Value
	hdr := []string{"Cookie", preCookie + "=" + pre, "X-CSRF-Token", pre, "Origin", testOrigin, "Sec-Fetch-Site", "same-origin"}
	w := serve(s, "POST", "/console/api/login/begin", `{}`, hdr...)
	body := w.Body.String()
	if w.Code != 200 || !strings.Contains(body, `"rpId":"localhost"`) || !strings.Contains(body, `"userVerification":"required"`) {
		t.Fatalf("got %d %s", w.Code, body)
	}
}

// TestCeremonyLimits: the open ceremonies are capped per browser, per
// client address and in all; a ceremony past a cap is refused with 429,
// the refusal is logged, and nothing is stored; an expired or finished
// ceremony frees its place.
func TestCeremonyLimits(t *testing.T) {
	s, rec := newTestServer(t)
	now := time.Now()
	s.cfg.Now = func() time.Time { return now }
	// begin starts a sign-in in a browser (a new pre-session token when
	// pre is "") from address addr, and returns its pre-session token and
	// the answer's status.
	begin := func(addr, pre string) (string, int) {
		if pre == "" {
			page := serve(s, "GET", "/console/login", "")
			pre = page.Result().Cookies()[0].Value
		}
		r := httptest.NewRequest("POST", testOrigin+"/console/api/login/begin", strings.NewReader(`{}`))
		r.RemoteAddr = addr
		r.Header.Set("Cookie", preCookie+"="+pre)
		r.Header.Set("X-CSRF-Token", pre)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return pre, w.Code
	}
	refused := func(what string, status int) {
		t.Helper()
		if status != http.StatusTooManyRequests {
			t.Fatalf("%s: got %d, want 429", what, status)
		}
		if len(rec.list) != 1 || rec.list[0] != (refusal{"", "too_many_ceremonies"}) {
			t.Fatalf("%s: recorded %v, want one too_many_ceremonies", what, rec.list)
		}
		rec.list = nil
	}

	// Per browser.
	pre, _ := begin("192.0.2.1:1000", "")
	for i := 1; i < maxCeremoniesPerOwner; i++ {
		if _, status := begin("192.0.2.1:1000", pre); status != 200 {
			t.Fatalf("ceremony %d of one browser: got %d, want 200", i+1, status)
		}
	}
	_, status := begin("192.0.2.1:1000", pre)
	refused("one browser past its cap", status)
	// An enrolment link is not spent on a ceremony that cannot open.
	link, err := passkey.Store{Dir: s.cfg.DataDir}.CreateLink("alice", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	enrol := func(pre string) int {
		r := httptest.NewRequest("POST", testOrigin+"/console/api/enrol/begin", strings.NewReader(`{"token": "`+link+`"}`))
		r.RemoteAddr = "192.0.2.1:1000"
		r.Header.Set("Cookie", preCookie+"="+pre)
		r.Header.Set("X-CSRF-Token", pre)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w.Code
	}
	refused("an enrolment in a full browser", enrol(pre))
	if _, status := begin("192.0.2.1:1001", ""); status != 200 {
		t.Fatalf("another browser at the same address: got %d, want 200", status)
	}

	// Per client address: new browsers from one address.
	for i := maxCeremoniesPerOwner + 1; i < maxCeremoniesPerClient; i++ {
		if _, status := begin("192.0.2.1:1002", ""); status != 200 {
			t.Fatalf("ceremony %d of one address: got %d, want 200", i+1, status)
		}
	}
	_, status = begin("192.0.2.1:1003", "")
	refused("one address past its cap", status)
	if n := s.ceremonies.byClient["192.0.2.1"]; n != maxCeremoniesPerClient {
		t.Fatalf("%d ceremonies stored for the address, want %d", n, maxCeremoniesPerClient)
	}
	if _, status := begin("198.51.100.7:1000", ""); status != 200 {
		t.Fatalf("another address: got %d, want 200", status)
	}

	// In all.
	for i := 0; len(s.ceremonies.byID) < maxCeremonies; i++ {
		c := &ceremony{kind: "signin", owner: fmt.Sprint("pre:", i), client: fmt.Sprint("client-", i), expires: now.Add(time.Minute)}
		if err := s.ceremonies.put(now, random(), c); err != nil {
			t.Fatal(err)
		}
	}
	_, status = begin("203.0.113.9:1000", "")
	refused("the console past its cap", status)
	if n := len(s.ceremonies.byID); n != maxCeremonies {
		t.Fatalf("%d ceremonies stored, want %d", n, maxCeremonies)
	}

	// Expired ones free their places; a finished one frees its place.
	now = now.Add(ceremonyTTL)
	if status := enrol(pre); status != 200 {
		t.Fatalf("the enrolment link after the ceremonies expired: got %d, want 200 (the refused attempt must not have spent it)", status)
	}
	s.ceremonies.take(now, "enrol:"+pre, "enrol")
	if _, status := begin("192.0.2.1:1000", pre); status != 200 {
		t.Fatalf("after the ceremonies expired: got %d, want 200", status)
	}
	if n := len(s.ceremonies.byID); n != 1 || s.ceremonies.byOwner["pre:"+pre] != 1 || s.ceremonies.byClient["192.0.2.1"] != 1 {
		t.Fatalf("after expiry: %d open, %d for the browser, %d for the address; want 1, 1, 1", n, s.ceremonies.byOwner["pre:"+pre], s.ceremonies.byClient["192.0.2.1"])
	}
	for k := range s.ceremonies.byID {
		if _, ok := s.ceremonies.take(now, k, "signin"); !ok {
			t.Fatal("take: the open sign-in is not there")
		}
	}
	if len(s.ceremonies.byID) != 0 || len(s.ceremonies.byOwner) != 0 || len(s.ceremonies.byClient) != 0 {
		t.Fatalf("after the last ceremony closed: %d open, counts %v %v", len(s.ceremonies.byID), s.ceremonies.byOwner, s.ceremonies.byClient)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	reg, _ := approval.NewRegistry([]approval.Approver{{ID: "alice"}})
	refused := func(context.Context, string, string, string) error { return nil }
	for _, cfg := range []Config{
		{Origin: "localhost:8443", Approvers: reg, Refused: refused},
		{Origin: testOrigin + "/path", Approvers: reg, Refused: refused},
		{Origin: testOrigin, Approvers: reg},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted it", cfg)
		}
	}
}
