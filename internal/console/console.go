// Package console is the approvers' and auditors' web console, served by
// rulelock serve under /console/: server-rendered pages (html/template,
// embedded), htmx vendored from npm, a strict Content-Security-Policy and
// nothing loaded from third parties.
//
// People sign in with a passkey (WebAuthn), enrolled through a one-time
// link an admin creates with the CLI; who they are (an approver with its
// groups, or an auditor) comes from the gateway's config, never from the
// browser. Approvers approve and reject by signing the approval statement
// with their passkey; auditors read the log. Agents' bearer tokens open
// nothing here.
//
// The package is in two halves that share this file: auth.go (sessions'
// sign-in, passkey enrolment, the passkey-signed approval ceremony) and
// pages.go (the pages: the pending queue, a request, the auditors' search,
// an entry with its proof, a request's story).
package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/httpapi"
)

// A Person is someone the config lets use the console.
type Person struct {
	ID       string
	Approver bool
	Groups   []string // an approver's groups
	Auditor  bool
}

// Config configures the console.
type Config struct {
	Gateway *gateway.Gateway
	Log     httpapi.LogAPI
	// LogKey is the key that signs the log's checkpoints: the entry pages
	// check every inclusion proof against a checkpoint this key signed,
	// and every such checkpoint's consistency with the newest one the
	// console has seen (when Log is a ConsistencyProver).
	// Without it no proof is shown as verified.
	LogKey note.Verifier
	// People looks up a person by id in the gateway's config; ok is false
	// for anyone else (agents included).
	People func(id string) (Person, bool)
	// DataDir holds the console's own state (passkeys, enrolment links),
	// beside the log, never in it.
	DataDir string
	// Origin is the console's external origin (scheme://host[:port]), the
	// WebAuthn relying party's origin; its host is the RP ID.
	Origin string
	// Refused records a refused attempt (a bad CSRF token, a logged-out
	// session, a wrong group, an agent's token...) in the log, attributed
	// to the caller when one is known ("" otherwise). Required.
	Refused func(ctx context.Context, caller, code, detail string) error
	// SessionTTL is how long a session lasts (default 8 hours).
	SessionTTL time.Duration
	Now        func() time.Time // default time.Now

	// Approvers is the gateway's approver registry (gateway.Config's):
	// the console reads the passkeys enrolled in it. Nil: no approvers.
	Approvers *approval.Registry
	// Registry, when set, is asked for the approver registry in force
	// instead of Approvers (a reload of the configuration replaces it).
	Registry func() *approval.Registry
	// Bearer, when set, names the holder of an API bearer token, so that a
	// token presented to the console (refused) is logged against its
	// holder; ok is false for an unknown token.
	Bearer func(token string) (id string, ok bool)
}

// Server serves /console/.
type Server struct {
	cfg        Config
	mux        *http.ServeMux
	sessions   sessions
	webauthn   *webauthn.WebAuthn // auth.go
	ceremonies ceremonies         // auth.go
	seen       newestSeen         // the newest checkpoint seen (consistency.go)

	tmpl   map[string]*template.Template // the pages (render.go)
	static map[string]staticFile         // the static files, by name
}

// registry is the approver registry in force.
func (s *Server) registry() *approval.Registry {
	if s.cfg.Registry != nil {
		if r := s.cfg.Registry(); r != nil {
			return r
		}
	}
	return s.cfg.Approvers
}

// New builds the console.
func New(cfg Config) (*Server, error) {
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Approvers == nil {
		reg, err := approval.NewRegistry(nil) // nobody approves
		if err != nil {
			return nil, err
		}
		cfg.Approvers = reg
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.sessions.byID = map[string]*Session{}
	s.loadSeen()
	if err := s.authRoutes(s.mux); err != nil {
		return nil, err
	}
	if err := s.pageRoutes(s.mux); err != nil {
		return nil, err
	}
	return s, nil
}

// csp allows only the console's own scripts, styles and images, and no
// framing: nothing inline, nothing from third parties.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// ServeHTTP serves every console route with the security headers set.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin") // never to a third party; same-origin POSTs keep their Origin (no-referrer would make it "null")
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if s.refuseBearer(w, r) {
		return
	}
	s.mux.ServeHTTP(w, r)
}

// A Session is a signed-in person.
type Session struct {
	ID      string
	Person  Person
	CSRF    string // sent back with every state-changing request
	Expires time.Time
}

type sessions struct {
	mu   sync.Mutex
	byID map[string]*Session
}

const cookieName = "rulelock_console"

// startSession signs p in: a new random session id in an HttpOnly,
// SameSite=Strict cookie (Secure under TLS), and a new CSRF token.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, p Person) *Session {
	sess := &Session{ID: random(), Person: p, CSRF: random(), Expires: s.cfg.Now().Add(s.cfg.SessionTTL)}
	s.sessions.mu.Lock()
	s.sessions.byID[sess.ID] = sess
	s.sessions.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: sess.ID, Path: "/console/", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, Expires: sess.Expires})
	return sess
}

// session returns r's session: a known, unexpired session whose person is
// still in the config (re-read, so a removed person is signed out).
func (s *Server) session(r *http.Request) (*Session, bool) {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil, false
	}
	s.sessions.mu.Lock()
	defer s.sessions.mu.Unlock()
	sess, ok := s.sessions.byID[c.Value]
	if !ok {
		return nil, false
	}
	if !s.cfg.Now().Before(sess.Expires) {
		delete(s.sessions.byID, sess.ID)
		return nil, false
	}
	p, ok := s.cfg.People(sess.Person.ID)
	if !ok {
		delete(s.sessions.byID, sess.ID)
		return nil, false
	}
	cp := *sess
	cp.Person = p
	cp.Person.Groups = slices.Clone(p.Groups)
	return &cp, true
}

// endSession signs r's session out.
func (s *Server) endSession(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(cookieName); err == nil {
		s.sessions.mu.Lock()
		delete(s.sessions.byID, c.Value)
		s.sessions.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/console/", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// checkCSRF reports whether a state-changing request r carries sess's
// CSRF token (header X-CSRF-Token, or form field csrf) and comes from the
// console's own origin (Origin header, when the browser sends one, and
// Sec-Fetch-Site, when it sends that).
func (s *Server) checkCSRF(r *http.Request, sess *Session) bool {
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		tok = r.PostFormValue("csrf")
	}
	if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(sess.CSRF)) != 1 {
		return false
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		want, err := url.Parse(s.cfg.Origin)
		got, err2 := url.Parse(o)
		if err != nil || err2 != nil || want.Scheme != got.Scheme || want.Host != got.Host {
			return false
		}
	}
	return true
}

// refuse answers a refused request with status and code, and records it
// with cfg.Refused. If the record cannot be written, the answer is 503:
// a refusal the log cannot keep is not answered as if it were kept.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, caller string, status int, code, detail string) {
	if err := s.cfg.Refused(r.Context(), caller, code, detail); err != nil {
		http.Error(w, "the log cannot record this refusal: try again", http.StatusServiceUnavailable)
		return
	}
	http.Error(w, code+": "+detail, status)
}

// random returns 32 random bytes, base64url.
func random() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// NoteRefused is the first word of the message of the note entry that
// records a refusal by the console (Config.Refused, as rulelock serve
// wires it): "console_refused <code>: <detail>".
const NoteRefused = "console_refused"
