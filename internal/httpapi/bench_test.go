package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/policy"
)

// encodingRecorder is a gateway.Recorder that encodes each entry as the
// audit log does and keeps nothing: the request path's CPU without the
// write, the fsync and the group commit.
type encodingRecorder struct{ n atomic.Int64 }

func (r *encodingRecorder) Append(_ context.Context, e *audit.Entry) (audit.Receipt, error) {
	b, err := e.Encode()
	if err != nil {
		return audit.Receipt{}, err
	}
	return audit.Receipt{Index: r.n.Add(1) - 1, LeafHash: tlog.RecordHash(b)}, nil
}

// nopWriter is a ResponseWriter that discards the reply.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

// BenchmarkDecide is the server side of POST /v1/decide without the
// network: authentication, body reading and strict decoding, evaluation of
// the seed rule, the decision entry, the reply's JSON and the metrics,
// spread over 64 agents. With log=encoding the entry is only encoded, as the
// audit log does (no write, no fsync, no group commit): the request path's
// CPU. With log=audit it goes to a real audit.Log in a temporary directory,
// fdatasync included, from 32 goroutines per processor so that group
// commits form: its time per decision depends on the disk, its allocations
// are the whole path's.
func BenchmarkDecide(b *testing.B) {
	b.Run("log=encoding", func(b *testing.B) { benchmarkDecide(b, &encodingRecorder{}, 1) })
	b.Run("log=audit", func(b *testing.B) {
		l, err := audit.Open(b.TempDir(), audit.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		benchmarkDecide(b, l, 32)
	})
}

func benchmarkDecide(b *testing.B, log gateway.Recorder, parallelism int) {
	benchmarkDecideWith(b, log, parallelism, nil)
}

// benchmarkDecideWith is benchmarkDecide with tracer (nil: tracing off).
func benchmarkDecideWith(b *testing.B, log gateway.Recorder, parallelism int, tracer trace.Tracer) {
	p, err := policy.FromSources([]policy.Source{{Name: "seed.rules", Data: []byte(`policy "seed" {
  default: allow
}
rule "NoHighValueTransfers" {
precondition: action.type == "transfer"
condition: action.amount <= 10000
deny: "Transfers over $10,000 require human approval"
}
`)}}, policy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Policy: p, Log: log, Tracer: tracer})
	if err != nil {
		b.Fatal(err)
	}
	const agents = 64
	var toks []httpapi.Token
	for i := range agents {
		toks = append(toks, httpapi.Token{SHA256: httpapi.HashToken(fmt.Sprintf("token-%d", i)), Agent: policy.Agent{ID: fmt.Sprintf("agent-%d", i), Roles: []string{"payments"}}})
	}
	api := httpapi.New(httpapi.Config{Gateway: gw, Tokens: toks, Ready: func() bool { return true }, Tracer: tracer})
	const body = `{"action":{"type":"transfer","amount":500,"to":"acct-1"}}`
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(1)
		auth := fmt.Sprintf("Bearer token-%d", i%agents)
		w := &nopWriter{h: http.Header{}}
		for pb.Next() {
			req, _ := http.NewRequest("POST", "/v1/decide", strings.NewReader(body))
			req.RequestURI = "/v1/decide"
			req.Header.Set("Authorization", auth)
			req.Header.Set("Content-Type", "application/json")
			clear(w.h)
			api.ServeHTTP(w, req)
		}
	})
}
