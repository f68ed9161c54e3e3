package console

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/approval"
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
// console's RP ID, user verification required; too many open ceremonies
// are refused, not stored.
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
	for i := len(s.ceremonies.byID); i < maxCeremonies; i++ {
		s.ceremonies.put(time.Now(), random(), &ceremony{kind: "signin", expires: time.Now().Add(time.Hour)})
	}
	if w := serve(s, "POST", "/console/api/login/begin", `{}`, hdr...); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("with %d ceremonies open: got %d, want 503", maxCeremonies, w.Code)
	}
	if n := len(s.ceremonies.byID); n != maxCeremonies {
		t.Fatalf("%d ceremonies stored, want at most %d", n, maxCeremonies)
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
