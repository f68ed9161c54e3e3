package mcpproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/rulelock/rulelock/policy"
)

// ServeStdio serves one agent over newline-delimited JSON on in and out
// until the agent closes in or ctx ends. Each line is one message, checked
// as framing.go describes before the SDK reads it; a refused line is
// answered with a JSON-RPC error, logged, and never reaches the server.
func (p *Proxy) ServeStdio(ctx context.Context, agent policy.Agent, in io.ReadCloser, out io.WriteCloser) error {
	w := &lockedWriter{w: out}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(p.frameStdio(ctx, agent, in, pw, w))
	}()
	ss, err := p.serverFor(agent).Connect(ctx, &mcp.IOTransport{Reader: pr, Writer: w, MaxLineLength: MaxMessage + 1}, nil)
	if err != nil {
		return err
	}
	return ss.Wait()
}

// frameStdio copies the messages of in that pass the strict reading to sdk,
// one per line, and answers the others on w, and a server/discover request
// too, on a session of its own (discover). It returns when in ends.
func (p *Proxy) frameStdio(ctx context.Context, agent policy.Agent, in io.Reader, sdk io.Writer, w io.Writer) error {
	br := bufio.NewReaderSize(in, 64<<10)
	for {
		line, r, err := readLine(br)
		if err != nil && (err != io.EOF || len(line) == 0) {
			return err
		}
		if r == nil {
			r = checkMessage(line)
		}
		var reply []byte
		if r != nil {
			reply, _ = p.refuse(ctx, agent, r, line)
		} else if req, ok := discoverRequest(line); ok {
			reply = p.discover(ctx, agent, req) // nil for a notification
		} else {
			if p.cfg.Tracer != nil {
				p.reqIDs.note(agent.ID, "", line)
			}
			if _, werr := sdk.Write(append(line, '\n')); werr != nil {
				return werr
			}
		}
		if reply != nil {
			if _, werr := w.Write(append(reply, '\n')); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}

// methodDiscover is the probe of the 2026-07-28 protocol (SEP-2575).
const methodDiscover = "server/discover"

// discoverRequest returns line, a message that passed the strict reading,
// as a request when it is a server/discover request.
func discoverRequest(line []byte) (*jsonrpc.Request, bool) {
	if !bytes.Contains(line, []byte(methodDiscover)) {
		return nil, false // most messages: not decoded again
	}
	m, err := jsonrpc.DecodeMessage(line)
	if err != nil {
		return nil, false
	}
	req, ok := m.(*jsonrpc.Request)
	return req, ok && req.Method == methodDiscover
}

// discover answers a server/discover request on a session of its own,
// closed once it has answered, and returns the reply; a discover sent as a
// notification is answered with nothing. The SDK answers a discover on a
// transport that serves the 2026-07-28 protocol (stdio does) by recording
// the client's parameters as the session's initialization, so a client
// that gives up on its discover after a second (the Vercel AI SDK's
// client: a gateway still starting, or a loaded machine, answers later)
// and falls back to initialize, as it may, would be refused "duplicate
// initialize" on that session and could not connect. The discover is
// stateless in the protocol: a client that goes on in the new protocol
// names its version and capabilities in every request, and the SDK
// initializes the session from its first one.
func (p *Proxy) discover(ctx context.Context, agent policy.Agent, req *jsonrpc.Request) []byte {
	if !req.IsCall() {
		return nil
	}
	b, err := p.discoverAlone(ctx, agent, req)
	if err != nil {
		return errorReply(req.ID.Raw(), jsonrpc.CodeInternalError, "server/discover failed: "+err.Error(), "")
	}
	return b
}

func (p *Proxy) discoverAlone(ctx context.Context, agent policy.Agent, req *jsonrpc.Request) ([]byte, error) {
	st, ct := mcp.NewInMemoryTransports()
	ss, err := p.serverFor(agent).Connect(ctx, st, nil)
	if err != nil {
		return nil, err
	}
	defer ss.Close()
	conn, err := ct.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.Write(ctx, req); err != nil {
		return nil, err
	}
	for {
		m, err := conn.Read(ctx)
		if err != nil {
			return nil, err
		}
		if res, ok := m.(*jsonrpc.Response); ok && res.ID == req.ID {
			return jsonrpc.EncodeMessage(res)
		}
	}
}

// readLine reads one line of at most MaxMessage bytes and returns it
// without its "\n", or why the line is refused as framing: a "\r" in it,
// no "\n" before the end of input (err is then io.EOF), or too many bytes
// (of which the line returned holds the first MaxMessage; the rest is
// read and dropped).
func readLine(br *bufio.Reader) ([]byte, *refusal, error) {
	var line []byte
	over := false
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > MaxMessage+1 {
			over = true
			chunk = chunk[:max(0, MaxMessage-len(line))]
		}
		line = append(line, chunk...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && len(line) > 0:
			return line, &refusal{code: refusedFraming, rpc: jsonrpc.CodeParseError, msg: `the input ended inside a message: each message ends with "\n"`}, err
		case err != nil:
			return line, nil, err
		}
		if over {
			return line, &refusal{code: refusedTooLarge, rpc: jsonrpc.CodeInvalidRequest, msg: fmt.Sprintf("a message is at most %d bytes", MaxMessage)}, nil
		}
		line = line[:len(line)-1]
		if bytes.IndexByte(line, '\r') >= 0 {
			return line, &refusal{code: refusedFraming, rpc: jsonrpc.CodeParseError, msg: `a carriage return in a message: messages are separated by "\n" alone`}, nil
		}
		return line, nil, nil
	}
}

// lockedWriter serialises the SDK's writes with the refusals.
type lockedWriter struct {
	mu sync.Mutex
	w  io.WriteCloser
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (l *lockedWriter) Close() error { return l.w.Close() }

// Authenticator maps a bearer token, presented on request r, to an agent.
type Authenticator func(token string, r *http.Request) (policy.Agent, bool)

// HTTPHandler serves MCP over streamable HTTP to many agents. Each request
// carries the agent's bearer token; the MCP session is bound to the agent
// that opened it (another agent's requests on it get 403, logged), each
// body is one message read strictly (framing.go), and the token goes no
// further than this handler.
func (p *Proxy) HTTPHandler(authn Authenticator, maxBody int64) http.Handler {
	agents := sync.Map{} // agent id → policy.Agent, as authenticated
	verify := func(_ context.Context, token string, r *http.Request) (*auth.TokenInfo, error) {
		a, ok := authn(token, r)
		if !ok {
			return nil, auth.ErrInvalidToken
		}
		agents.Store(a.ID, a)
		return &auth.TokenInfo{UserID: a.ID}, nil
	}
	h := mcp.NewStreamableHTTPHandler(func(r *http.Request) *mcp.Server {
		ti := auth.TokenInfoFromContext(r.Context())
		if ti == nil {
			return nil
		}
		a, ok := agents.Load(ti.UserID)
		if !ok {
			return nil
		}
		return p.httpServerFor(a.(policy.Agent))
	}, &mcp.StreamableHTTPOptions{Logger: p.logger, MaxRequestBodyBytes: maxBody})
	guard := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a any
		if ti := auth.TokenInfoFromContext(r.Context()); ti != nil {
			a, _ = agents.Load(ti.UserID)
		}
		if a == nil {
			http.Error(w, "unauthenticated", http.StatusUnauthorized)
			return
		}
		p.guardHTTP(w, r, a.(policy.Agent), maxBody, h)
	})
	authed := auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})(guard)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authed.ServeHTTP(&challenger{ResponseWriter: w, token: r.Header.Get("Authorization") != ""}, r)
	})
}

// httpServerFor is serverFor for the streamable HTTP handler, which asks
// for the agent's server on every request, not only when a session opens:
// an agent's server that exists is returned as it is. Refreshing its tools
// there would evaluate, on every request, whether the policy may allow
// each tool (Policy.MayAllow: 15 µs per request with one tool and a
// two-rule policy, docs/benchmarks.md), while what it keeps current is
// refreshed anyway where it can change: tools/list, PolicyChanged and an
// upstream's resync.
func (p *Proxy) httpServerFor(agent policy.Agent) *mcp.Server {
	p.mu.Lock()
	as := p.servers[agent.ID]
	p.mu.Unlock()
	if as != nil {
		return as.server
	}
	return p.serverFor(agent)
}

// guardHTTP passes an authenticated agent's request to the SDK's handler
// next when it names no other agent's session and, for a POST, its body is
// one message that passes the strict reading (framing.go). Otherwise the
// refusal is logged and answered with a JSON-RPC error.
func (p *Proxy) guardHTTP(w http.ResponseWriter, r *http.Request, agent policy.Agent, maxBody int64, next http.Handler) {
	var body []byte
	if r.Method == http.MethodPost {
		var err error
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			rf := &refusal{code: refusedTooLarge, rpc: jsonrpc.CodeInvalidRequest, msg: fmt.Sprintf("the body is unreadable or larger than %d bytes", maxBody)}
			p.writeRefusal(w, r, agent, http.StatusRequestEntityTooLarge, rf, body)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	if sid := r.Header.Get("Mcp-Session-Id"); sid != "" && !strings.HasPrefix(sid, sessionPrefix(agent.ID)) {
		rf := &refusal{code: refusedSession, rpc: jsonrpc.CodeInvalidRequest, msg: "the Mcp-Session-Id header names a session that was not opened by this agent"}
		p.writeRefusal(w, r, agent, http.StatusForbidden, rf, body)
		return
	}
	if sid := r.Header.Get("Mcp-Session-Id"); sid != "" && !strings.HasPrefix(sid, sessionPrefix(agent.ID)+p.replica+".") {
		// 404, as for a session that ended: a client opens a new one.
		rf := &refusal{code: refusedReplica, rpc: jsonrpc.CodeInvalidRequest, msg: "the Mcp-Session-Id header names a session this replica did not open " +
			"(another replica opened it, or this one before a restart): MCP sessions are kept per replica, and a load balancer in front of " +
			"several replicas must send each session to the replica that opened it (sticky sessions, e.g. on the Mcp-Session-Id header); open a new session"}
		p.writeRefusal(w, r, agent, http.StatusNotFound, rf, body)
		return
	}
	if r.Method == http.MethodPost {
		if rf := checkMessage(body); rf != nil {
			p.writeRefusal(w, r, agent, http.StatusBadRequest, rf, body)
			return
		}
		if p.cfg.Tracer != nil {
			p.reqIDs.note(agent.ID, r.Header.Get("Mcp-Session-Id"), body)
		}
	}
	next.ServeHTTP(w, r)
}

// writeRefusal logs a refused request and answers it with status, or 503
// when the refusal could not be logged.
func (p *Proxy) writeRefusal(w http.ResponseWriter, r *http.Request, agent policy.Agent, status int, rf *refusal, body []byte) {
	reply, logged := p.refuse(r.Context(), agent, rf, body)
	if !logged {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(reply)
}

// sessionPrefix starts every MCP session id issued to the agent, so that
// a request naming another agent's session is recognised (and logged)
// without a table of sessions: the rest of the id is random.
func sessionPrefix(agentID string) string {
	sum := sha256.Sum256([]byte("rulelock mcp session\x00" + agentID))
	return hex.EncodeToString(sum[:8]) + "-"
}

// challenger adds the RFC 6750 challenge to a 401, so that a client knows
// to send a bearer token (and the MCP inspector does not start an OAuth
// flow rulelock does not offer): realm, and error="invalid_token" when a
// token was sent.
type challenger struct {
	http.ResponseWriter
	token bool
}

func (c *challenger) WriteHeader(code int) {
	if code == http.StatusUnauthorized && c.Header().Get("WWW-Authenticate") == "" {
		v := `Bearer realm="rulelock"`
		if c.token {
			v += `, error="invalid_token", error_description="the token is not an agent's"`
		}
		c.Header().Set("WWW-Authenticate", v)
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *challenger) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *challenger) Unwrap() http.ResponseWriter { return c.ResponseWriter }
