package mcpproxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/rulelock/rulelock/policy"
)

// batchError is the JSON-RPC reply to a batch: batches are not part of the
// protocol since 2025-06-18, and rulelock never takes one apart.
const batchError = `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"JSON-RPC batches are not supported"}}`

// ServeStdio serves one agent over newline-delimited JSON on in and out
// until the agent closes in or ctx ends. Batches are answered with an
// error and never reach the server.
func (p *Proxy) ServeStdio(ctx context.Context, agent policy.Agent, in io.ReadCloser, out io.WriteCloser) error {
	w := &lockedWriter{w: out}
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), mcp.DefaultMaxLineLength)
		for sc.Scan() {
			line := sc.Bytes()
			if t := bytes.TrimLeft(line, " \t\r"); len(t) > 0 && t[0] == '[' {
				_, _ = w.Write([]byte(batchError + "\n"))
				continue
			}
			if _, err := pw.Write(append(append([]byte{}, line...), '\n')); err != nil {
				return
			}
		}
		pw.CloseWithError(sc.Err())
	}()
	ss, err := p.serverFor(agent).Connect(ctx, &mcp.IOTransport{Reader: pr, Writer: w}, nil)
	if err != nil {
		return err
	}
	return ss.Wait()
}

// lockedWriter serialises the SDK's writes with the batch rejections.
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
// that opened it (another agent's requests on it get 403), and the token
// goes no further than this handler.
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
		return p.serverFor(a.(policy.Agent))
	}, &mcp.StreamableHTTPOptions{Logger: p.logger, MaxRequestBodyBytes: maxBody})
	authed := auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
			if err != nil {
				http.Error(w, "request body too large or unreadable", http.StatusRequestEntityTooLarge)
				return
			}
			if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && t[0] == '[' {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = io.WriteString(w, batchError)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		authed.ServeHTTP(&challenger{ResponseWriter: w, token: r.Header.Get("Authorization") != ""}, r)
	})
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
