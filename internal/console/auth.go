package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/passkey"
)

// The sign-in half of the console.
//
// Enrolment: an admin runs `rulelock console enrol ID`, which stores a
// one-time link token (passkey.Store) and prints
// <origin>/console/enrol#<token>. The token is in the fragment, so it
// reaches no server or proxy log: passkey.js reads it and posts it to
// /console/api/enrol/begin, which claims it (single use, even if the
// ceremony then fails) and starts a WebAuthn registration (go-webauthn:
// resident key and user verification required, no attestation). Finish
// logs the credential (gateway.EnrolPasskey: an enrolment note entry,
// durable before the passkey counts) and signs the approver in. Auditors
// enrol the same way; their passkeys sign them in and nothing else, so the
// console keeps them in its data directory (passkey.Store), with a
// passkey_enrolled_auditor note in the log for the trail.
//
// Sign-in: a discoverable-credential assertion over the challenge
// passkey.Challenge(signInStatement, nonce), checked by the same offline
// passkey.Verify that checks approvals: the browser picks the passkey, its
// credential id names the approver.
//
// Voting: /console/api/vote/begin builds the request's approval statement
// (approval.Request.Statement) and issues a nonce bound to the session,
// its person, the request and the verdict, for five minutes and one use;
// the challenge is passkey.Challenge(statement, nonce). Finish takes the
// nonce back (a replayed or cross-request assertion finds none that fits),
// checks the credential is the signed-in approver's, and hands the
// approval.PasskeyApproval to gateway.Approve or Reject, which apply every
// approval rule and log it in the APPROVAL entry.
//
// CSRF: signed-in POSTs carry the session's token (checkCSRF). The
// signed-out ceremonies (sign-in, enrolment) carry a pre-session token
// instead: GET /console/login and /console/enrol set it in a cookie
// (HttpOnly, SameSite=Strict) and in the page's csrf-token meta, and the
// POST must echo it in X-CSRF-Token from the console's own origin.
//
// Refusals: every refusal here goes through s.refuse and so into the log,
// except those of the approval rules themselves (wrong group, duplicate,
// expired...), which the gateway already logs with the caller
// (gateway.RefusedVote): the console answers those without logging them a
// second time.

const (
	ceremonyTTL = 5 * time.Minute
	// The open sign-in, enrolment and vote ceremonies are capped, so that
	// no caller can fill the console's memory with them: per browser (its
	// pre-session token, or its session), per client address, and all
	// callers together. A ceremony is closed when it is finished or
	// expires; past a cap a new one is refused (and the refusal logged)
	// until one closes.
	maxCeremonies          = 4096
	maxCeremoniesPerClient = 64 // one address: a team behind one proxy shares it
	maxCeremoniesPerOwner  = 8  // one browser: a person needs one or two at a time
	maxBody                = 64 << 10
	preCookie              = "rulelock_console_pre"
	// signInStatement is what a sign-in assertion signs (with a nonce):
	// never an approval statement, whose first line differs.
	signInStatement = "rulelock console sign-in v1\n"
)

//go:embed auth_templates/*.html
var authTemplateFS embed.FS

var authTemplates = template.Must(template.ParseFS(authTemplateFS, "auth_templates/*.html"))

// A ceremony is an open WebAuthn ceremony, keyed by its nonce (votes,
// sign-ins) or pre-session token (enrolments).
type ceremony struct {
	kind    string // "signin", "enrol", "vote"
	expires time.Time
	pre     string // the pre-session token (sign-in, enrolment)
	owner   string // the browser it counts against: "pre:"+pre, or "session:"+the session's id (set by open)
	client  string // the client's address (set by open)
	// enrolment
	approver string
	reg      *webauthn.SessionData
	// vote
	session   string
	person    string
	request   string
	verdict   approval.Verdict
	statement approval.Statement
}

type ceremonies struct {
	mu       sync.Mutex
	byID     map[string]*ceremony
	byOwner  map[string]int // open ceremonies per browser
	byClient map[string]int // open ceremonies per client address
}

// Why a ceremony was not opened.
var (
	errCeremoniesBrowser = errors.New("too many passkey ceremonies under way in this browser: finish or cancel one, or wait five minutes")
	errCeremoniesClient  = errors.New("too many passkey ceremonies under way from this address: wait a few minutes")
	errCeremonies        = errors.New("too many passkey ceremonies under way: wait a few minutes")
)

// put stores c under key, replacing the ceremony under key, if any; it
// refuses one over a cap (errCeremoniesBrowser, errCeremoniesClient,
// errCeremonies), after closing the expired ones.
func (cs *ceremonies) put(now time.Time, key string, c *ceremony) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.byID == nil {
		cs.byID, cs.byOwner, cs.byClient = map[string]*ceremony{}, map[string]int{}, map[string]int{}
	}
	cs.remove(key)
	if err := cs.room(now, c.owner, c.client); err != nil {
		return err
	}
	cs.byID[key] = c
	cs.byOwner[c.owner]++
	cs.byClient[c.client]++
	return nil
}

// room reports whether one more ceremony fits for owner and client,
// closing the expired ones when a cap is reached. cs.mu is held.
func (cs *ceremonies) room(now time.Time, owner, client string) error {
	full := func() error {
		switch {
		case cs.byOwner[owner] >= maxCeremoniesPerOwner:
			return errCeremoniesBrowser
		case cs.byClient[client] >= maxCeremoniesPerClient:
			return errCeremoniesClient
		case len(cs.byID) >= maxCeremonies:
			return errCeremonies
		}
		return nil
	}
	if full() == nil {
		return nil
	}
	for k, o := range cs.byID {
		if !now.Before(o.expires) {
			cs.remove(k)
		}
	}
	return full()
}

// hasRoom is room for a caller about to spend something (an enrolment
// link) on a ceremony: put checks again.
func (cs *ceremonies) hasRoom(now time.Time, owner, client string) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.byID == nil {
		return nil
	}
	return cs.room(now, owner, client)
}

// remove closes the ceremony under key, if any. cs.mu is held.
func (cs *ceremonies) remove(key string) *ceremony {
	c, ok := cs.byID[key]
	if !ok {
		return nil
	}
	delete(cs.byID, key)
	if cs.byOwner[c.owner]--; cs.byOwner[c.owner] <= 0 {
		delete(cs.byOwner, c.owner)
	}
	if cs.byClient[c.client]--; cs.byClient[c.client] <= 0 {
		delete(cs.byClient, c.client)
	}
	return c
}

// take removes and returns the unexpired ceremony of kind under key.
func (cs *ceremonies) take(now time.Time, key, kind string) (*ceremony, bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := cs.remove(key)
	if c == nil || c.kind != kind || !now.Before(c.expires) {
		return nil, false
	}
	return c, true
}

// open opens ceremony c under key for r's browser (owner) and client
// address, or refuses r (logged, as caller) when a cap is reached.
func (s *Server) open(w http.ResponseWriter, r *http.Request, caller, owner, key string, c *ceremony) bool {
	c.owner, c.client = owner, clientAddr(r)
	c.expires = s.cfg.Now().Add(ceremonyTTL)
	if err := s.ceremonies.put(s.cfg.Now(), key, c); err != nil {
		s.refuse(w, r, caller, http.StatusTooManyRequests, "too_many_ceremonies", err.Error())
		return false
	}
	return true
}

// clientAddr is r's client address without its port: the peer of the
// connection (a proxy in front of the console is one client).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// authRoutes registers sign-in, passkey enrolment and the passkey-signed
// approval ceremony.
func (s *Server) authRoutes(mux *http.ServeMux) error {
	rpID, err := passkey.RPID(s.cfg.Origin)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	if s.cfg.Refused == nil {
		return errors.New("console: Config.Refused is required")
	}
	wa, err := webauthn.New(&webauthn.Config{
		RPID: rpID, RPDisplayName: "rulelock", RPOrigins: []string{s.cfg.Origin},
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey: protocol.ResidentKeyRequirementRequired, RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification: protocol.VerificationRequired,
		},
		AttestationPreference: protocol.PreferNoAttestation,
	})
	if err != nil {
		return fmt.Errorf("console: webauthn: %w", err)
	}
	s.webauthn = wa
	mux.HandleFunc("GET /console/login", s.loginPage)
	mux.HandleFunc("GET /console/enrol", s.enrolPage)
	mux.HandleFunc("POST /console/api/login/begin", s.loginBegin)
	mux.HandleFunc("POST /console/api/login/finish", s.loginFinish)
	mux.HandleFunc("POST /console/api/enrol/begin", s.enrolBegin)
	mux.HandleFunc("POST /console/api/enrol/finish", s.enrolFinish)
	mux.HandleFunc("POST /console/logout", s.logout)
	mux.HandleFunc("POST /console/api/vote/begin", s.voteBegin)
	mux.HandleFunc("POST /console/api/vote/finish", s.voteFinish)
	return nil
}

// refuseBearer refuses a request that carries an Authorization header:
// agents' (and approvers' API) bearer tokens open nothing in the console.
// It reports whether it refused.
func (s *Server) refuseBearer(w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if h == "" {
		return false
	}
	caller := ""
	if tok, ok := strings.CutPrefix(h, "Bearer "); ok && s.cfg.Bearer != nil {
		if id, ok := s.cfg.Bearer(tok); ok {
			caller = id
		}
	}
	s.refuse(w, r, caller, http.StatusForbidden, "bearer_token", "API tokens are not accepted by the console: sign in with a passkey")
	return true
}

type authPage struct {
	CSRF     string
	SignedIn string // the signed-in person's id
	Enrol    bool
}

// prePage renders a signed-out page with a new pre-session token, or, for
// a signed-in person, with their session's token.
func (s *Server) prePage(w http.ResponseWriter, r *http.Request, name string, enrol bool) {
	p := authPage{Enrol: enrol}
	if sess, ok := s.session(r); ok && !enrol {
		p.CSRF, p.SignedIn = sess.CSRF, sess.Person.ID
	} else {
		p.CSRF = random()
		http.SetCookie(w, &http.Cookie{Name: preCookie, Value: p.CSRF, Path: "/console/", HttpOnly: true,
			Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, MaxAge: int(ceremonyTTL.Seconds()) * 6})
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := authTemplates.ExecuteTemplate(w, name, p); err != nil {
		http.Error(w, "render: "+err.Error(), http.StatusInternalServerError)
	}
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.prePage(w, r, "login.html", false)
}
func (s *Server) enrolPage(w http.ResponseWriter, r *http.Request) {
	s.prePage(w, r, "enrol.html", true)
}

// checkPre checks a signed-out ceremony's CSRF: the pre-session cookie,
// echoed in X-CSRF-Token, from the console's origin. It returns the token.
func (s *Server) checkPre(w http.ResponseWriter, r *http.Request) (string, bool) {
	c, err := r.Cookie(preCookie)
	tok := r.Header.Get("X-CSRF-Token")
	if err != nil || tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(c.Value)) != 1 || !s.sameOrigin(r) {
		s.refuse(w, r, "", http.StatusForbidden, "csrf", "missing or wrong CSRF token, or another origin")
		return "", false
	}
	return c.Value, true
}

// sameOrigin reports whether r's Origin and Sec-Fetch-Site headers, when
// present, say it comes from the console's own origin.
func (s *Server) sameOrigin(r *http.Request) bool {
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

// signedIn returns r's session after checking its CSRF token, or refuses r.
func (s *Server) signedIn(w http.ResponseWriter, r *http.Request) (*Session, bool) {
	sess, ok := s.session(r)
	if !ok {
		s.refuse(w, r, "", http.StatusUnauthorized, "signed_out", "no session: sign in at /console/login")
		return nil, false
	}
	if !s.checkCSRF(r, sess) {
		s.refuse(w, r, sess.Person.ID, http.StatusForbidden, "csrf", "missing or wrong CSRF token, or another origin")
		return nil, false
	}
	return sess, true
}

// decode reads r's JSON body into v strictly: size-capped, no unknown
// fields, nothing after it.
func decode(r *http.Request, w http.ResponseWriter, v any) error {
	d := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// assertionRequest is what passkey.js sends back from
// navigator.credentials.get, every binary field base64url.
type assertionRequest struct {
	Nonce      string `json:"nonce"`
	Request    string `json:"request,omitempty"`
	Credential struct {
		ID       string `json:"id"`
		RawID    string `json:"rawId"`
		Type     string `json:"type"`
		Response struct {
			AuthenticatorData string  `json:"authenticatorData"`
			ClientDataJSON    string  `json:"clientDataJSON"`
			Signature         string  `json:"signature"`
			UserHandle        *string `json:"userHandle"`
		} `json:"response"`
	} `json:"credential"`
}

// assertion decodes a's binary fields (padded or not) into a
// passkey.Assertion.
func (a *assertionRequest) assertion() (passkey.Assertion, error) {
	var out passkey.Assertion
	fields := []struct {
		s   string
		dst *[]byte
	}{{a.Nonce, &out.Nonce}, {a.Credential.RawID, &out.Credential}, {a.Credential.Response.AuthenticatorData, &out.AuthenticatorData},
		{a.Credential.Response.ClientDataJSON, &out.ClientDataJSON}, {a.Credential.Response.Signature, &out.Signature}}
	for _, f := range fields {
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(f.s, "="))
		if err != nil || len(b) == 0 {
			return out, errors.New("want base64url nonce, rawId, authenticatorData, clientDataJSON and signature")
		}
		*f.dst = b
	}
	if a.Credential.Type != "public-key" {
		return out, fmt.Errorf("credential type %q, want public-key", a.Credential.Type)
	}
	return out, nil
}

// requestOptions is the publicKey argument of navigator.credentials.get.
func (s *Server) requestOptions(challenge []byte, creds []passkey.Credential) map[string]any {
	allow := []map[string]any{}
	for _, c := range creds {
		allow = append(allow, map[string]any{"type": "public-key", "id": base64.RawURLEncoding.EncodeToString(c.ID)})
	}
	rpID, _ := passkey.RPID(s.cfg.Origin)
	return map[string]any{"challenge": base64.RawURLEncoding.EncodeToString(challenge), "rpId": rpID,
		"allowCredentials": allow, "userVerification": "required", "timeout": ceremonyTTL.Milliseconds()}
}

func newNonce() []byte {
	b := make([]byte, passkey.NonceSize)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return b
}

func (s *Server) loginBegin(w http.ResponseWriter, r *http.Request) {
	pre, ok := s.checkPre(w, r)
	if !ok {
		return
	}
	nonce := newNonce()
	key := base64.RawURLEncoding.EncodeToString(nonce)
	if !s.open(w, r, "", "pre:"+pre, key, &ceremony{kind: "signin", pre: pre}) {
		return
	}
	writeJSON(w, map[string]any{"nonce": key, "publicKey": s.requestOptions(passkey.Challenge([]byte(signInStatement), nonce), nil)})
}

func (s *Server) loginFinish(w http.ResponseWriter, r *http.Request) {
	pre, ok := s.checkPre(w, r)
	if !ok {
		return
	}
	var req assertionRequest
	if err := decode(r, w, &req); err != nil {
		s.refuse(w, r, "", http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	c, ok := s.ceremonies.take(s.cfg.Now(), req.Nonce, "signin")
	if !ok || c.pre != pre {
		s.refuse(w, r, "", http.StatusForbidden, "bad_nonce", "sign-in nonce unknown, used, expired or another browser's")
		return
	}
	a, err := req.assertion()
	if err != nil {
		s.refuse(w, r, "", http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	cred, auditor, ok := s.passkeyOwner(a.Credential)
	if !ok {
		s.refuse(w, r, "", http.StatusForbidden, "unknown_passkey", "nobody enrolled this passkey")
		return
	}
	if err := passkey.Verify(cred, []byte(signInStatement), a); err != nil {
		s.refuse(w, r, cred.Approver, http.StatusForbidden, "bad_signature", err.Error())
		return
	}
	if h := req.Credential.Response.UserHandle; h != nil && *h != "" && strings.TrimRight(*h, "=") != base64.RawURLEncoding.EncodeToString(userHandle(cred.Approver)) {
		s.refuse(w, r, cred.Approver, http.StatusForbidden, "bad_signature", "the passkey's user handle is another approver's")
		return
	}
	p, ok := s.cfg.People(cred.Approver)
	if !ok || auditor && !p.Auditor || !auditor && !p.Approver {
		s.refuse(w, r, cred.Approver, http.StatusForbidden, "not_a_person", "the passkey's person is no longer in the config as what they enrolled as")
		return
	}
	sess := s.startSession(w, r, p)
	writeJSON(w, map[string]any{"person": p.ID, "csrf": sess.CSRF})
}

// passkeyOwner finds the enrolled passkey with credential id id: an
// approver's (in the registry, from the log) or an auditor's (in the
// store); auditor says which.
func (s *Server) passkeyOwner(id []byte) (c passkey.Credential, auditor, ok bool) {
	if c, ok := s.registry().PasskeyOwner(id); ok {
		return c, false, true
	}
	for _, c := range s.auditorPasskeys("") {
		if bytes.Equal(c.ID, id) {
			return c, true, true
		}
	}
	return passkey.Credential{}, false, false
}

// auditorPasskeys returns the auditors' passkeys in the store, only
// auditor's unless auditor is "". A store that does not read gives none:
// nobody signs in with them.
func (s *Server) auditorPasskeys(auditor string) []passkey.Credential {
	all, err := passkey.Store{Dir: s.cfg.DataDir}.Credentials()
	if err != nil {
		return nil
	}
	return slices.DeleteFunc(all, func(c passkey.Credential) bool { return auditor != "" && c.Approver != auditor })
}

// passkeys returns p's enrolled passkeys.
func (s *Server) passkeys(p Person) []passkey.Credential {
	if p.Approver {
		return s.registry().Passkeys(p.ID)
	}
	return s.auditorPasskeys(p.ID)
}

// userHandle is the WebAuthn user handle of approver: the SHA-256 of its
// id (ids may be longer than WebAuthn's 64-byte limit).
func userHandle(approver string) []byte {
	h := sha256.Sum256([]byte(approver))
	return h[:]
}

// webauthnUser is an approver as go-webauthn's registration sees them.
type webauthnUser struct {
	id    string
	creds []passkey.Credential
}

func (u webauthnUser) WebAuthnID() []byte          { return userHandle(u.id) }
func (u webauthnUser) WebAuthnName() string        { return u.id }
func (u webauthnUser) WebAuthnDisplayName() string { return u.id }
func (u webauthnUser) WebAuthnCredentials() []webauthn.Credential {
	var out []webauthn.Credential
	for _, c := range u.creds {
		out = append(out, webauthn.Credential{ID: c.ID, PublicKey: c.PublicKey})
	}
	return out
}

func (s *Server) enrolBegin(w http.ResponseWriter, r *http.Request) {
	pre, ok := s.checkPre(w, r)
	if !ok {
		return
	}
	var req struct {
		Token string `json:"token"`
	}
	if err := decode(r, w, &req); err != nil {
		s.refuse(w, r, "", http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	// A link is spent when claimed: refuse before claiming it when no
	// ceremony could be opened for it.
	if err := s.ceremonies.hasRoom(s.cfg.Now(), "pre:"+pre, clientAddr(r)); err != nil {
		s.refuse(w, r, "", http.StatusTooManyRequests, "too_many_ceremonies", err.Error())
		return
	}
	id, err := passkey.Store{Dir: s.cfg.DataDir}.ClaimLink(req.Token, s.cfg.Now())
	if err != nil {
		s.refuse(w, r, "", http.StatusForbidden, "bad_link", err.Error())
		return
	}
	p, ok := s.cfg.People(id)
	if !ok || !p.Approver && !p.Auditor {
		s.refuse(w, r, id, http.StatusForbidden, "not_a_person", "the link's person is neither an approver nor an auditor in the config")
		return
	}
	u := webauthnUser{id: id, creds: s.passkeys(p)}
	var exclude []protocol.CredentialDescriptor
	for _, c := range u.WebAuthnCredentials() {
		exclude = append(exclude, c.Descriptor())
	}
	creation, sd, err := s.webauthn.BeginRegistration(u, webauthn.WithExclusions(exclude))
	if err != nil {
		http.Error(w, "begin registration: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if !s.open(w, r, id, "pre:"+pre, "enrol:"+pre, &ceremony{kind: "enrol", pre: pre, approver: id, reg: sd}) {
		return
	}
	writeJSON(w, creation)
}

func (s *Server) enrolFinish(w http.ResponseWriter, r *http.Request) {
	pre, ok := s.checkPre(w, r)
	if !ok {
		return
	}
	c, ok := s.ceremonies.take(s.cfg.Now(), "enrol:"+pre, "enrol")
	if !ok {
		s.refuse(w, r, "", http.StatusForbidden, "bad_nonce", "no enrolment under way in this browser (or it expired): ask for a new link")
		return
	}
	p, ok := s.cfg.People(c.approver)
	if !ok || !p.Approver && !p.Auditor {
		s.refuse(w, r, c.approver, http.StatusForbidden, "not_a_person", "the person left the config")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	wc, err := s.webauthn.FinishRegistration(webauthnUser{id: p.ID, creds: s.passkeys(p)}, *c.reg, r)
	if err != nil {
		s.refuse(w, r, p.ID, http.StatusBadRequest, "bad_registration", registrationError(err))
		return
	}
	cred := passkey.Credential{Approver: p.ID, ID: wc.ID, PublicKey: wc.PublicKey, Origin: s.cfg.Origin}
	if err := s.enrol(r.Context(), p, cred); err != nil {
		if errors.Is(err, gateway.ErrUnavailable) {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		s.refuse(w, r, p.ID, http.StatusConflict, "enrolment_refused", err.Error())
		return
	}
	sess := s.startSession(w, r, p)
	writeJSON(w, map[string]any{"person": p.ID, "fingerprint": cred.Fingerprint(), "csrf": sess.CSRF})
}

// enrol records cred, p's new passkey. An approver's goes into the log
// (gateway.EnrolPasskey), which is its store. An auditor's is logged as a
// note for the audit trail, then stored in the console's data directory;
// it signs auditors in and nothing else.
func (s *Server) enrol(ctx context.Context, p Person, cred passkey.Credential) error {
	if p.Approver {
		return s.cfg.Gateway.EnrolPasskey(ctx, cred)
	}
	if _, _, ok := s.passkeyOwner(cred.ID); ok {
		return errors.New("this passkey is already enrolled")
	}
	if err := s.cfg.Gateway.Note(ctx, p.ID, "", passkey.AuditorEnrolmentNote(cred)); err != nil {
		return err
	}
	return passkey.Store{Dir: s.cfg.DataDir}.AddCredential(cred)
}

// registrationError is go-webauthn's error with its details.
func registrationError(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.DevInfo != "" {
		return pe.Details + ": " + pe.DevInfo
	}
	return err.Error()
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.signedIn(w, r); !ok {
		return
	}
	s.endSession(w, r)
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}
