// Package httpapi is rulelock's JSON API over HTTP, versioned under /v1/.
//
// Every route but /healthz and /readyz authenticates the caller with a bearer
// token; the caller's identity and roles come from the token, never from the
// body. A token is an agent's (actions, its own requests, its own log
// entries), an approver's (approvals, the whole log) or an auditor's (the
// whole log, read-only); the checkpoint and the hash tiles are for every
// caller, and /readyz without a token says only ready or not, and why by
// code. Requests are read strictly: only application/json, a body limit
// enforced before anything is evaluated (413), canonical paths only (no
// "//", "/./", percent-escapes), and one strict JSON decoder. Errors are JSON
// with a stable code:
//
//	{"error": {"code": "too_large", "message": "body is larger than 65536 bytes"}}
package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// Token is an agent's credential as the server keeps it: the SHA-256 of
// the bearer token, never the token.
type Token struct {
	SHA256   [32]byte
	Agent    policy.Agent // the agent, the approver or the auditor (ID only for the last two)
	Approver bool         // an approver's token: approvals and the whole log, never actions
	// Auditor marks an auditor's token: read-only, the whole log (entries,
	// proofs, entry bundles) and the gateway's status; never actions,
	// never approvals. A token is an agent's, an approver's or an
	// auditor's: Approver and Auditor are never both set.
	Auditor bool
	// CertSHA256, when not zero, binds the token to a client certificate:
	// it is accepted only on a TLS connection whose client certificate
	// (the leaf, DER) has this SHA-256, so that the token alone, stolen
	// or leaked, does not authenticate (certificate-bound tokens, as in
	// RFC 8705, by configuration).
	CertSHA256 [32]byte
}

// presentedBy reports whether r may use t: t is bound to no certificate,
// or r came over TLS with the client certificate t is bound to.
func (t *Token) presentedBy(r *http.Request) bool {
	if t.CertSHA256 == ([32]byte{}) {
		return true
	}
	return r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && sha256.Sum256(r.TLS.PeerCertificates[0].Raw) == t.CertSHA256
}

// readsAll reports whether t reads every entry of the log (approvers and
// auditors); an agent reads only the entries that name it.
func (t *Token) readsAll() bool { return t != nil && (t.Approver || t.Auditor) }

// HashToken returns the SHA-256 of a bearer token.
func HashToken(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// LogAPI serves the audit log to third parties.
type LogAPI interface {
	Size() int64
	Checkpoint() []byte              // the latest signed checkpoint (nil before the first)
	Entry(i int64) ([]byte, error)   // the encoded entry
	Receipt(i int64) ([]byte, error) // entry + inclusion proof + checkpoint
	Tiles() http.Handler             // the tlog-tiles directory, rooted at /v1/log/
}

// Config configures the API.
type Config struct {
	Gateway *gateway.Gateway
	Tokens  []Token
	// TokenSet, when set, is used instead of Tokens: the tokens a reload
	// of the configuration replaces (TokenSet.Set).
	TokenSet *TokenSet
	Log      LogAPI
	Ready    func() bool
	Reason   func() string // why not ready, for /readyz (optional)
	Status   func() Active // the active policy, which /readyz reports to authenticated callers (optional)
	Metrics  *Metrics
	// MaxBody caps request bodies (default 64 KiB).
	MaxBody int64
	// Tracer, when set, traces the agent and approver routes (trace.go);
	// nil is off.
	Tracer trace.Tracer
}

// Active is the active policy as /readyz reports it to an authenticated
// caller (docs/openapi.yaml, Ready.active).
type Active struct {
	Policy          string   `json:"policy"`  // the bundle's digest
	Version         uint64   `json:"version"` // 0 in development mode
	Signers         []string `json:"signers"` // the keys that signed the bundle ([] in development mode)
	DevelopmentMode bool     `json:"development_mode"`
}

// Server is the HTTP API.
type Server struct {
	cfg    Config
	routes []route
	mux    *http.ServeMux
	tokens *TokenSet
}

// route is one entry of the route table.
type route struct {
	pattern string
	public  bool   // health only: no authentication
	who     string // "agent", "approver", or "" for any authenticated caller
	handler func(w http.ResponseWriter, r *http.Request, agent policy.Agent)
	// reader, instead of handler, serves a route whose answer depends on
	// who asks (the log's entries, /readyz): it gets the caller's token,
	// nil on a public route called without a valid one.
	reader func(w http.ResponseWriter, r *http.Request, caller *Token)
}

// New builds the server and its route table.
func New(cfg Config) *Server {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 64 << 10
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), tokens: cfg.TokenSet}
	if s.tokens == nil {
		s.tokens = NewTokenSet(cfg.Tokens)
	}
	s.routes = []route{
		{pattern: "POST /v1/actions", who: "agent", handler: s.submit(true)},
		{pattern: "POST /v1/decide", who: "agent", handler: s.submit(false)},
		{pattern: "GET /v1/requests/{id}", who: "agent", handler: s.getRequest},
		{pattern: "POST /v1/requests/{id}/outcome", who: "agent", handler: s.reportOutcome},
		{pattern: "GET /v1/approvals", who: "approver", handler: s.pending},
		{pattern: "POST /v1/requests/{id}/approvals", who: "approver", handler: s.vote(true)},
		{pattern: "POST /v1/requests/{id}/rejections", who: "approver", handler: s.vote(false)},
		{pattern: "GET /v1/log/checkpoint", handler: s.checkpoint},
		{pattern: "GET /v1/log/entries/{i}", reader: s.entry},
		{pattern: "GET /v1/log/proof/{i}", reader: s.proof},
		{pattern: "GET /v1/log/tile/", reader: s.tiles},
		{pattern: "GET /v1/log/find", reader: s.find},                        // approvers and auditors (find.go)
		{pattern: "GET /v1/freeze", who: "approver", handler: s.freezeState}, // freeze.go
		{pattern: "POST /v1/freeze", who: "approver", handler: s.freeze(false)},
		{pattern: "POST /v1/unfreeze", who: "approver", handler: s.freeze(true)},
		{pattern: "GET /metrics", handler: s.metrics},
		{pattern: "GET /healthz", public: true, reader: s.healthz},
		{pattern: "GET /readyz", public: true, reader: s.readyz},
	}
	for _, rt := range s.routes {
		s.mux.Handle(rt.pattern, s.traced(rt, s.wrap(rt)))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		for _, m := range []string{"GET", "POST"} {
			alt := r.Clone(r.Context())
			alt.Method = m
			if _, pattern := s.mux.Handler(alt); pattern != "/" && pattern != "" {
				w.Header().Set("Allow", m)
				writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use "+m)
				return
			}
		}
		writeError(w, http.StatusNotFound, "not_found", "no such route")
	})
	return s
}

// Routes lists the route patterns and whether each authenticates.
func (s *Server) Routes() map[string]bool {
	m := map[string]bool{}
	for _, rt := range s.routes {
		m[rt.pattern] = !rt.public
	}
	return m
}

// ServeHTTP rejects non-canonical paths before routing.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !canonicalPath(r) {
		writeError(w, http.StatusBadRequest, "non_canonical_path", "the path must be canonical: no empty, . or .. segments and no percent-escapes")
		return
	}
	s.mux.ServeHTTP(w, r)
}

func canonicalPath(r *http.Request) bool {
	p := r.URL.Path
	if r.URL.RawPath != "" || strings.Contains(r.RequestURI, "%") || !strings.HasPrefix(p, "/") {
		return false
	}
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && p != "/" {
		clean += "/"
	}
	return clean == p
}

// wrap authenticates (unless public) and recovers, failing closed.
func (s *Server) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := s.authenticateTraced(r, rt)
		if rt.public {
			// A public route answers everyone; a valid token may show
			// more (/readyz), an invalid one is no token.
			var caller *Token
			if ok {
				caller = &tok
			}
			rt.reader(w, r, caller)
			return
		}
		if !ok {
			s.cfg.Metrics.failClosed("unauthenticated")
			w.Header().Set("WWW-Authenticate", `Bearer realm="rulelock"`)
			writeError(w, http.StatusUnauthorized, "unauthenticated", "a valid bearer token is required")
			return
		}
		isAgent := !tok.Approver && !tok.Auditor
		if (rt.who == "agent" && !isAgent) || (rt.who == "approver" && !tok.Approver) {
			s.cfg.Metrics.failClosed("forbidden")
			writeError(w, http.StatusForbidden, "forbidden", "this route is for "+rt.who+"s")
			return
		}
		if rt.reader != nil {
			rt.reader(w, r, &tok)
			return
		}
		rt.handler(w, r, tok.Agent)
	})
}

func (s *Server) authenticate(r *http.Request) (Token, bool) {
	h := r.Header.Values("Authorization")
	if len(h) != 1 {
		return Token{}, false
	}
	tok, ok := strings.CutPrefix(h[0], "Bearer ")
	if !ok || tok == "" {
		return Token{}, false
	}
	// Looked up by the token's SHA-256, in time independent of the
	// number of tokens: what a lookup's timing could reveal is about the
	// hash, and a hash does not give the token back.
	t := s.tokens.lookup(HashToken(tok))
	if t == nil || !t.presentedBy(r) {
		return Token{}, false
	}
	return *t, true
}

// readBody reads a JSON body within the limit. On failure it has written the
// error reply and returns the code and what it read.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) (body []byte, code, msg string, status int) {
	if ct := r.Header.Values("Content-Type"); len(ct) != 1 || ct[0] != "application/json" { // the common case, without parsing
		mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			return nil, "unsupported_media_type", "Content-Type must be application/json", http.StatusUnsupportedMediaType
		}
		for k, v := range params {
			if k != "charset" || !strings.EqualFold(v, "utf-8") {
				return nil, "unsupported_media_type", "the only Content-Type parameter accepted is charset=utf-8", http.StatusUnsupportedMediaType
			}
		}
	}
	if r.ContentLength > s.cfg.MaxBody {
		return nil, "too_large", fmt.Sprintf("body is larger than %d bytes", s.cfg.MaxBody), http.StatusRequestEntityTooLarge
	}
	body, err := readAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody), r.ContentLength)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, "too_large", fmt.Sprintf("body is larger than %d bytes", s.cfg.MaxBody), http.StatusRequestEntityTooLarge
	}
	if err != nil {
		return nil, "bad_request", "read body: " + err.Error(), http.StatusBadRequest
	}
	return body, "", "", 0
}

// readAll reads r to the end into a buffer sized for a body of n bytes
// (when n is known): one allocation for the usual body instead of
// io.ReadAll's growing from 512 bytes.
func readAll(r io.Reader, n int64) ([]byte, error) {
	if n < 0 {
		return io.ReadAll(r)
	}
	b := make([]byte, 0, n+1) // +1: the read that sees io.EOF needs room
	for {
		m, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // longer than announced: grow
		}
	}
}

// actionBody is the body of POST /v1/actions and /v1/decide.
type actionBody struct {
	Action      policy.Action
	Session     string
	Instruction string
	Reasoning   string
}

func decodeActionBody(b []byte) (*actionBody, error) {
	v, err := strictjson.Decode(b, strictjson.Limits{})
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("the body must be a JSON object")
	}
	out := &actionBody{}
	for k, v := range m {
		switch k {
		case "action":
			if out.Action, err = policy.NewAction(v); err != nil {
				return nil, err
			}
		case "session", "instruction", "reasoning":
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("%s must be a string", k)
			}
			switch k {
			case "session":
				out.Session = s
			case "instruction":
				out.Instruction = s
			default:
				out.Reasoning = s
			}
		default:
			// agent, now and anything else are not the agent's to say.
			return nil, fmt.Errorf("unknown field %q", k)
		}
	}
	if out.Action.Fields == nil {
		return nil, errors.New("action is required")
	}
	return out, nil
}

func (s *Server) submit(execute bool) func(http.ResponseWriter, *http.Request, policy.Agent) {
	return func(w http.ResponseWriter, r *http.Request, agent policy.Agent) {
		start := time.Now()
		sp := s.decodeSpan(r.Context())
		body, code, msg, status := s.readBody(w, r)
		if code == "" {
			code, msg = gateway.Refusal(s.cfg.Gateway.Ready())
			status = http.StatusServiceUnavailable
		}
		if code == "" {
			ab, err := decodeActionBody(body)
			if err == nil {
				endDecode(sp, "")
				s.decided(w, r, start, agent, ab, execute, body)
				return
			}
			code, msg, status = "bad_request", err.Error(), http.StatusBadRequest
		}
		endDecode(sp, code)
		s.refuse(w, r, agent, code, msg, status, body)
	}
}

// refuse answers a request refused before a decision, logged as a denial
// when the log can still take it (every authenticated request is in the
// log); when it cannot, nothing was done and the reply says so.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, agent policy.Agent, code, msg string, status int, body []byte) {
	s.cfg.Metrics.failClosed(code)
	res, err := s.cfg.Gateway.Refuse(r.Context(), agent, code, msg, body)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the audit log is unavailable: nothing was done")
		return
	}
	writeJSON(w, status, map[string]any{"error": apiError{Code: code, Message: msg}, "request_id": res.RequestID, "receipt": res.Receipt})
}

func (s *Server) decided(w http.ResponseWriter, r *http.Request, start time.Time, agent policy.Agent, ab *actionBody, execute bool, body []byte) {
	res, err := s.cfg.Gateway.Submit(r.Context(), &gateway.Request{
		Agent: agent, Session: ab.Session, Action: ab.Action, Instruction: ab.Instruction, Reasoning: ab.Reasoning,
	}, execute)
	if code, msg := gateway.Refusal(err); code != "" { // became unready since the check
		s.refuse(w, r, agent, code, msg, http.StatusServiceUnavailable, body)
		return
	}
	if err != nil {
		s.cfg.Metrics.failClosed("unavailable")
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the gateway could not record the decision: nothing was done")
		return
	}
	s.cfg.Metrics.decided(string(res.Decision.Decision), time.Since(start))
	s.cfg.Metrics.checked(res.Postconditions)
	writeJSON(w, http.StatusOK, res)
}

// maxWait caps GET /v1/requests/{id}?wait=.
const maxWait = 60 * time.Second

func (s *Server) getRequest(w http.ResponseWriter, r *http.Request, agent policy.Agent) {
	var res *gateway.Result
	var err error
	if ws := r.URL.Query().Get("wait"); ws != "" {
		d, perr := time.ParseDuration(ws)
		if perr != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "bad_request", "wait must be a duration such as 30s")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), min(d, maxWait))
		defer cancel()
		res, err = s.cfg.Gateway.Wait(ctx, agent.ID, r.PathValue("id"))
	} else {
		res, err = s.cfg.Gateway.Get(agent.ID, r.PathValue("id"))
	}
	if err != nil {
		writeGatewayError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) reportOutcome(w http.ResponseWriter, r *http.Request, agent policy.Agent) {
	body, code, msg, status := s.readBody(w, r)
	if code != "" {
		writeError(w, status, code, msg)
		return
	}
	v, err := strictjson.Decode(body, strictjson.Limits{})
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	m, _ := v.(map[string]any)
	out := gateway.Outcome{}
	for k, v := range m {
		switch k {
		case "status":
			st, _ := v.(string)
			out.Status = ledger.Status(st)
		case "result":
			c, err := strictjson.Canonical(v)
			if err != nil {
				writeError(w, http.StatusBadRequest, "bad_request", err.Error())
				return
			}
			out.Body = c
		default:
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("unknown field %q", k))
			return
		}
	}
	switch out.Status {
	case gateway.StatusOK, gateway.StatusError, gateway.StatusUnknown:
	default:
		writeError(w, http.StatusBadRequest, "bad_request", `status must be "ok", "error" or "unknown"`)
		return
	}
	res, err := s.cfg.Gateway.ReportOutcome(r.Context(), agent.ID, r.PathValue("id"), out)
	if err != nil {
		writeGatewayError(w, err)
		return
	}
	s.cfg.Metrics.checked(res.Postconditions)
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) pending(w http.ResponseWriter, r *http.Request, _ policy.Agent) {
	p := s.cfg.Gateway.Pending()
	if p == nil {
		p = []gateway.PendingRequest{}
	}
	s.cfg.Metrics.Pending.Set(float64(len(p)))
	writeJSON(w, http.StatusOK, map[string]any{"pending": p})
}

func (s *Server) vote(approve bool) func(http.ResponseWriter, *http.Request, policy.Agent) {
	return func(w http.ResponseWriter, r *http.Request, caller policy.Agent) {
		note, ok := s.readNote(w, r)
		if !ok {
			return
		}
		var res *gateway.ApprovalResult
		var err error
		if approve {
			res, err = s.cfg.Gateway.Approve(r.Context(), caller.ID, r.PathValue("id"), []byte(note))
		} else {
			res, err = s.cfg.Gateway.Reject(r.Context(), caller.ID, r.PathValue("id"), []byte(note))
		}
		if err != nil {
			writeApprovalError(w, err)
			return
		}
		if res.Result != nil { // this approval executed the request
			s.cfg.Metrics.checked(res.Result.Postconditions)
		}
		// The statement's signer is who approved; the token only admitted the caller.
		writeJSON(w, http.StatusOK, res)
	}
}

func writeApprovalError(w http.ResponseWriter, err error) {
	code := approval.Code(err)
	switch code {
	case "":
		writeGatewayError(w, err)
	case "not_found":
		writeError(w, http.StatusNotFound, code, err.Error())
	case "bad_statement":
		writeError(w, http.StatusBadRequest, code, err.Error())
	default:
		writeError(w, http.StatusConflict, code, err.Error())
	}
}

// CheckpointReader is a LogAPI whose latest checkpoint may be unreadable
// for a while (a log in PostgreSQL): GET /v1/log/checkpoint answers 503
// unavailable then, not 404 as before the first checkpoint.
type CheckpointReader interface {
	ReadCheckpoint() ([]byte, error) // nil, nil before the first checkpoint
}

func (s *Server) checkpoint(w http.ResponseWriter, r *http.Request, _ policy.Agent) {
	var cp []byte
	if cr, ok := s.cfg.Log.(CheckpointReader); ok {
		var err error
		if cp, err = cr.ReadCheckpoint(); err != nil {
			writeError(w, http.StatusServiceUnavailable, "unavailable", "the audit log is unavailable")
			return
		}
	} else {
		cp = s.cfg.Log.Checkpoint()
	}
	if cp == nil {
		writeError(w, http.StatusNotFound, "not_found", "no checkpoint yet")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(cp)
}

func (s *Server) entry(w http.ResponseWriter, r *http.Request, caller *Token) {
	s.logItem(w, r, caller, nil, "application/json")
}

func (s *Server) proof(w http.ResponseWriter, r *http.Request, caller *Token) {
	s.logItem(w, r, caller, s.cfg.Log.Receipt, "text/plain; charset=utf-8")
}

// logItem serves entry i (get nil) or what get returns for it (a receipt,
// which holds the entry), if the caller may read entry i: approvers and
// auditors read every entry, an agent only the entries that name it as
// their agent. Any other entry is answered exactly as one that does not
// exist, so that an agent learns nothing of other agents' entries, not
// even which indexes are theirs (as GET /v1/requests/{id}).
func (s *Server) logItem(w http.ResponseWriter, r *http.Request, caller *Token, get func(int64) ([]byte, error), ctype string) {
	i, err := strconv.ParseInt(r.PathValue("i"), 10, 64)
	if err != nil || i < 0 || strconv.FormatInt(i, 10) != r.PathValue("i") {
		writeError(w, http.StatusBadRequest, "bad_request", "the index must be a non-negative decimal integer")
		return
	}
	b, err := s.cfg.Log.Entry(i)
	if err == nil && !caller.readsAll() && !namesAgent(b, caller.Agent.ID) {
		err = errNoEntry
	}
	if err == nil && get != nil {
		b, err = get(i)
	}
	// A log that cannot be read now (PostgreSQL down) is 503, for any
	// index: it says nothing of whether entry i exists.
	var u interface{ Unavailable() bool }
	if errors.As(err, &u) && u.Unavailable() {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the audit log is unavailable")
		return
	}
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", "no such entry")
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Write(b)
}

var errNoEntry = errors.New("no such entry")

// namesAgent reports whether the encoded entry b is agent's: it decodes
// and its agent is agent. Entries of no agent (notes, activations,
// approvals) are no agent's.
func namesAgent(b []byte, agent string) bool {
	e, err := audit.DecodeEntry(b)
	return err == nil && agent != "" && e.Agent == agent
}

// tiles serves the tlog-tiles directory. The hash tiles (tile/<L>/...)
// hold only hashes and are for every authenticated caller, as the
// checkpoint is: any verifier can check proofs and consistency. The entry
// bundles (tile/entries/...) hold every entry in full, so they are for the
// callers who read every entry: approvers and auditors.
func (s *Server) tiles(w http.ResponseWriter, r *http.Request, caller *Token) {
	if p := r.URL.Path; (p == "/v1/log/tile/entries" || strings.HasPrefix(p, "/v1/log/tile/entries/")) && !caller.readsAll() {
		s.cfg.Metrics.failClosed("forbidden")
		writeError(w, http.StatusForbidden, "forbidden", "entry bundles are for approvers and auditors")
		return
	}
	if strings.HasSuffix(r.URL.Path, "/") { // a directory: tiles are files
		writeError(w, http.StatusNotFound, "not_found", "no such tile")
		return
	}
	http.StripPrefix("/v1/log", s.cfg.Log.Tiles()).ServeHTTP(&tileWriter{ResponseWriter: w}, r)
}

// tileWriter answers what the tiles' file server answers, except that a
// tile it does not have (404, or the redirect it makes for a directory) is
// the API's JSON not_found, as every other error of the API.
type tileWriter struct {
	http.ResponseWriter
	replaced bool // the file server's reply was replaced: discard its body
}

func (w *tileWriter) WriteHeader(status int) {
	if status == http.StatusServiceUnavailable { // a log in PostgreSQL that does not answer
		w.replaced = true
		writeError(w.ResponseWriter, status, "unavailable", "the audit log is unavailable")
		return
	}
	if status == http.StatusNotFound || status == http.StatusMovedPermanently {
		w.replaced = true
		h := w.Header()
		h.Del("Location")
		writeError(w.ResponseWriter, http.StatusNotFound, "not_found", "no such tile")
		return
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *tileWriter) Write(b []byte) (int, error) {
	if w.replaced {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request, _ policy.Agent) {
	if s.cfg.Log != nil {
		s.cfg.Metrics.LogSize.Set(float64(s.cfg.Log.Size()))
	}
	s.cfg.Metrics.Pending.Set(float64(len(s.cfg.Gateway.Pending())))
	st := s.cfg.Gateway.Ledger()
	s.cfg.Metrics.ledgerBytes.Set(float64(st.Bytes))
	s.cfg.Metrics.ledgerBudget.Set(float64(st.Budget))
	s.cfg.Metrics.overBudget.Set(float64(st.OverBudget))
	if cs, ok := s.cfg.Log.(CheckpointReporter); ok {
		s.cfg.Metrics.checkpoints(cs.CheckpointStatus(), cs.Unsigned())
	}
	s.cfg.Metrics.handler().ServeHTTP(w, r)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request, _ *Token) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is 200 exactly when an action would be decided, recorded and
// executed now: the server is serving (Config.Ready) and the gateway is
// ready (gateway.Ready: a policy is active, the log takes entries,
// signing is within log.max_unsigned). Otherwise 503 with a code and the
// reason. Checkpoint signing that fails but is still within max_unsigned
// is reported in the 200 body.
//
// Without a valid token the body is only the status and, when not ready,
// the code: the reason, the active policy (digest, version, signers) and
// the checkpoint signing state are for authenticated callers, who send
// their bearer token to /readyz.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request, caller *Token) {
	status, body := s.readiness()
	if caller == nil {
		body = map[string]any{"status": body["status"], "code": body["code"]}
		if body["code"] == nil {
			delete(body, "code")
		}
	}
	writeJSON(w, status, body)
}

// readiness is /readyz's status and full body.
func (s *Server) readiness() (int, map[string]any) {
	var gerr error
	if s.cfg.Gateway != nil {
		gerr = s.cfg.Gateway.Ready()
	}
	if s.cfg.Ready == nil || !s.cfg.Ready() || gerr != nil {
		body := map[string]any{"status": "not ready", "code": "starting"}
		if s.cfg.Reason != nil {
			body["reason"] = s.cfg.Reason()
		}
		s.addFrozen(body)
		switch code, _ := gateway.Refusal(gerr); {
		case code == "no_policy":
			body["code"] = code // the server's Reason says why (a rejected bundle)
		case code != "":
			body["code"], body["reason"] = code, gerr.Error()
		case gerr != nil:
			body["code"], body["reason"] = "log_failed", gerr.Error()
		}
		return http.StatusServiceUnavailable, body
	}
	body := map[string]any{"status": "ready"}
	s.addFrozen(body)
	if s.cfg.Status != nil {
		a := s.cfg.Status()
		if a.Signers == nil {
			a.Signers = []string{}
		}
		body["active"] = a
	}
	if cs, ok := s.cfg.Log.(CheckpointReporter); ok {
		if st := cs.CheckpointStatus(); st.Err != nil {
			body["checkpoint_signing"] = map[string]any{"failing": true, "error": st.Err.Error(),
				"failed_attempts": st.Failed, "oldest_unsigned_seconds": cs.Unsigned().Seconds()}
		}
	}
	return http.StatusOK, body
}

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]apiError{"error": {Code: code, Message: msg}})
}

func writeGatewayError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, gateway.ErrNotFound), errors.Is(err, gateway.ErrForbidden):
		// Another agent's request is reported as absent: ids do not leak.
		writeError(w, http.StatusNotFound, "not_found", "no such request")
	case errors.Is(err, gateway.ErrNoApprovals):
		writeError(w, http.StatusConflict, "no_approvers", err.Error())
	case errors.Is(err, gateway.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, gateway.ErrFrozen):
		writeError(w, http.StatusConflict, "frozen", gateway.FrozenMessage)
	case errors.Is(err, gateway.ErrUnsigned):
		writeError(w, http.StatusServiceUnavailable, "checkpoint_overdue", gateway.UnsignedMessage)
	case errors.Is(err, gateway.ErrUnattested):
		writeError(w, http.StatusServiceUnavailable, "attestation_failed", gateway.UnattestedMessage)
	default:
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the gateway could not record this: nothing was done")
	}
}

// replyBuffers recycles the buffers replies are encoded into.
var replyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// writeJSON encodes v into a buffer first, so that the reply goes out
// with a Content-Length in one write (a JSON encoder writing to w
// directly makes a reply over 2 KiB chunked).
func writeJSON(w http.ResponseWriter, status int, v any) {
	buf := replyBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 64<<10 {
			replyBuffers.Put(buf)
		}
	}()
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["X-Content-Type-Options"] = nosniff
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		// Nothing here fails to encode; if it ever did, fail closed.
		h["Content-Type"] = []string{"text/plain; charset=utf-8"}
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, "internal error: reply encoding failed\n")
		return
	}
	h["Content-Length"] = []string{strconv.Itoa(buf.Len())}
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// Header values shared by every reply; never modified.
var (
	jsonContentType = []string{"application/json"}
	nosniff         = []string{"nosniff"}
)

// NewHTTPServer returns an http.Server with explicit timeouts and header limits.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      90 * time.Second, // long enough for ?wait=60s
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return context.Background() },
	}
}

// readNote reads a body that is exactly {"note": "<signed statement>"}
// (votes, freezes), answering the error itself when it is not.
func (s *Server) readNote(w http.ResponseWriter, r *http.Request) (string, bool) {
	body, code, msg, status := s.readBody(w, r)
	if code != "" {
		writeError(w, status, code, msg)
		return "", false
	}
	v, err := strictjson.Decode(body, strictjson.Limits{})
	m, _ := v.(map[string]any)
	note, _ := m["note"].(string)
	if err != nil || len(m) != 1 || note == "" {
		writeError(w, http.StatusBadRequest, "bad_request", `the body must be {"note": "<signed statement>"}`)
		return "", false
	}
	return note, true
}
