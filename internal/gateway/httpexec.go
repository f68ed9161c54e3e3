package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/internal/tracing"
)

// HTTPExecutor performs an action as an HTTP request. The body is the
// canonical action; the headers carry the credentials the gateway holds.
// Nothing of the agent's request (its headers, its token, its raw bytes)
// reaches the upstream.
type HTTPExecutor struct {
	Method string
	// URL may name action fields in braces, e.g. https://bank/v1/payees/{to}:
	// each is replaced by the field's value, path-escaped. A field that is
	// missing or not a string or number makes the execution fail before
	// anything is sent.
	URL     string
	Headers http.Header // e.g. Authorization: Bearer <the gateway's credential>
	// Client sends the request; its Timeout bounds one execution (default
	// 30s). Whatever its CheckRedirect says, redirects are never followed
	// (NoRedirects). A Client without a Transport (or no Client) uses a
	// pool of keep-alive connections of this executor (NewTransport), not
	// http.DefaultTransport, which keeps only 2 idle connections per host
	// and so dials a new connection for most requests under load. The
	// fields must not change once Execute has been called.
	Client *http.Client
	// MaxBody caps the upstream reply kept in the outcome (default 64 KiB;
	// the digest always covers the whole body up to 16 MiB).
	MaxBody int64

	once   sync.Once
	client *http.Client // Client as used: pooled transport, no redirects
}

// NewTransport returns the transport of an HTTPExecutor whose Client has
// none: like http.DefaultTransport (proxy from the environment, HTTP/2 when
// the upstream offers it, the same dial and TLS timeouts), but keeping up
// to 256 idle connections per upstream host for 90 seconds, so that
// concurrent executions reuse connections instead of dialling one each and
// leaving a TIME_WAIT socket behind.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
	}
}

// httpClient returns the client Execute uses: h.Client with the pooled
// transport when it has none, and never following redirects.
func (h *HTTPExecutor) httpClient() *http.Client {
	h.once.Do(func() {
		c := http.Client{Timeout: 30 * time.Second}
		if h.Client != nil {
			c = *h.Client
		}
		if c.Transport == nil {
			c.Transport = NewTransport()
		}
		c.CheckRedirect = NoRedirects
		h.client = &c
	})
	return h.client
}

// Execute sends the request with Idempotency-Key: the request id.
func (h *HTTPExecutor) Execute(ctx context.Context, x Execution) Outcome {
	target, err := expandURL(h.URL, x.Action.Fields)
	if err != nil {
		return Outcome{Status: StatusError, Error: err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, h.Method, target, bytes.NewReader(x.Action.JSON))
	if err != nil {
		return Outcome{Status: StatusError, Error: err.Error()}
	}
	for k, vs := range h.Headers {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", x.RequestID)
	// The trace this execution is part of (W3C Trace Context), when
	// tracing: only traceparent, naming the gateway's execute span.
	if tp := tracing.Traceparent(trace.SpanContextFromContext(ctx)); tp != "" {
		req.Header.Set("Traceparent", tp)
	}
	// wrote: some of the request may have reached the upstream (reported
	// as unknown on failure). sent: all of it was written. replied: the
	// upstream's reply started.
	var wrote, sent, replied atomic.Bool
	req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteHeaders: func() { wrote.Store(true) },
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				sent.Store(true)
			}
		},
		GotFirstResponseByte: func() { replied.Store(true) },
	}))
	// net/http resends a request with an Idempotency-Key on a new
	// connection when a reused one fails before the reply, even after the
	// request was written: the upstream may then see the action twice. It
	// rewinds the body with GetBody first, so refusing to rewind a request
	// that was sent and not answered keeps it to one delivery; a request
	// that never left (a connection found dead before writing) is still
	// retried. (After a reply, GetBody is only asked for by a redirect,
	// which NoRedirects then declines.)
	action := x.Action.JSON
	req.GetBody = func() (io.ReadCloser, error) {
		if sent.Load() && !replied.Load() {
			return nil, errSent
		}
		return io.NopCloser(bytes.NewReader(action)), nil
	}
	resp, err := h.httpClient().Do(req)
	if err != nil {
		if wrote.Load() {
			// The upstream may have acted: we cannot say it did not.
			return Outcome{Status: StatusUnknown, Error: err.Error()}
		}
		return Outcome{Status: StatusError, Error: err.Error()}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return Outcome{Status: StatusUnknown, HTTPStatus: resp.StatusCode, Error: "read reply: " + err.Error()}
	}
	sum := sha256.Sum256(body)
	out := Outcome{Status: StatusOK, HTTPStatus: resp.StatusCode, BodySHA256: hex.EncodeToString(sum[:])}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		out.Status = StatusError
		out.Error = resp.Status
	}
	max := h.MaxBody
	if max <= 0 {
		max = 64 << 10
	}
	if int64(len(body)) <= max {
		// Keep the reply only in its canonical form, and only if it is JSON.
		if v, err := strictjson.Decode(body, strictjson.Limits{MaxBytes: int(max)}); err == nil {
			if c, err := strictjson.Canonical(v); err == nil {
				out.Body = json.RawMessage(c)
			}
		}
	}
	return out
}

// expandURL replaces {field} in a URL template with the field's value.
func expandURL(tmpl string, fields map[string]any) (string, error) {
	var b strings.Builder
	for {
		i := strings.IndexByte(tmpl, '{')
		if i < 0 {
			b.WriteString(tmpl)
			break
		}
		j := strings.IndexByte(tmpl[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("url template %q: unclosed {", tmpl)
		}
		name := tmpl[i+1 : i+j]
		var s string
		switch v := fields[name].(type) {
		case string:
			s = v
		case float64:
			s = string(strictjsonNumber(v))
		default:
			return "", fmt.Errorf("url template: action field %q is missing or not a string or number", name)
		}
		if s == "" || s == "." || s == ".." {
			return "", fmt.Errorf("url template: action field %q is empty or a dot segment", name)
		}
		b.WriteString(tmpl[:i])
		b.WriteString(url.PathEscape(s))
		tmpl = tmpl[i+j+1:]
	}
	return b.String(), nil
}

func strictjsonNumber(f float64) []byte {
	b, _ := strictjson.Canonical(f)
	return b
}

// errSent refuses to resend a request the upstream may have acted on.
var errSent = errors.New("not resent: the upstream may have received it")

// NoRedirects makes a client return a redirect instead of following it: a
// redirect must not carry the action and the gateway's credentials elsewhere.
func NoRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
