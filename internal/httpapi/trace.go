package httpapi

import (
	"context"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/rulelock/rulelock/internal/tracing"
)

// Tracing (Config.Tracer): the agent and approver routes each make a
// server span named for the route ("POST /v1/actions"), whose parent is
// the caller's W3C traceparent when it sent one, with the authenticate
// and decode spans as children and the gateway's after them. Nothing of
// the request but its route, method and status, and the ids and verdicts
// the gateway adds, is recorded: never a header, a token or the body.

// traceContext reads traceparent and tracestate; never baggage, which
// would carry the caller's words into every span it touches.
var traceContext = propagation.TraceContext{}

// traced wraps h, the handler of rt, in its server span when tracing is on
// and rt is an agent's or approver's route.
func (s *Server) traced(rt route, h http.Handler) http.Handler {
	if !s.tracedRoute(rt) {
		return h
	}
	method, path, _ := strings.Cut(rt.pattern, " ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, sp := s.cfg.Tracer.Start(ctx, rt.pattern, trace.WithSpanKind(trace.SpanKindServer))
		defer sp.End()
		if sp.IsRecording() {
			sp.SetAttributes(attribute.String("http.request.method", method), attribute.String("http.route", path))
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r.WithContext(ctx))
		if sp.IsRecording() {
			sp.SetAttributes(attribute.Int("http.response.status_code", sw.status))
			if sw.status >= 500 {
				sp.SetStatus(codes.Error, "")
			}
		}
	})
}

// tracedRoute says whether rt is traced: tracing is on and it is an
// agent's or approver's route (not health, metrics or the log's reads).
func (s *Server) tracedRoute(rt route) bool {
	return s.cfg.Tracer != nil && !rt.public && rt.who != ""
}

// authenticateTraced is authenticate, in its span on a traced route; the
// span says who the caller is (the kind of token, the agent's id), never
// the token.
func (s *Server) authenticateTraced(r *http.Request, rt route) (Token, bool) {
	if !s.tracedRoute(rt) {
		return s.authenticate(r)
	}
	_, sp := s.cfg.Tracer.Start(r.Context(), tracing.SpanAuthenticate)
	defer sp.End()
	tok, ok := s.authenticate(r)
	if sp.IsRecording() {
		switch {
		case !ok:
			sp.SetStatus(codes.Error, "unauthenticated")
		case tok.Approver:
			sp.SetAttributes(attribute.String("rulelock.caller", "approver"))
		case tok.Auditor:
			sp.SetAttributes(attribute.String("rulelock.caller", "auditor"))
		default:
			sp.SetAttributes(attribute.String("rulelock.caller", "agent"), tracing.Agent.String(tok.Agent.ID))
		}
	}
	return tok, ok
}

// decodeSpan starts the decode span of a request.
func (s *Server) decodeSpan(ctx context.Context) trace.Span {
	_, sp := tracing.Start(ctx, s.cfg.Tracer, tracing.SpanDecode)
	return sp
}

// endDecode ends it with the refusal's code, if any (not its message: it
// may quote the body).
func endDecode(sp trace.Span, code string) {
	if code != "" && sp.IsRecording() {
		sp.SetStatus(codes.Error, code)
	}
	sp.End()
}

// statusWriter remembers the status of the reply.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
