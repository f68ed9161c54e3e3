// Package tracingtest is an OTLP/HTTP trace receiver for tests: an
// httptest server that speaks the collector's protocol (POST /v1/traces,
// protobuf ExportTraceServiceRequest, gzip or not) with the OTLP protobuf
// types, and keeps every span and every byte it was sent, so that a test
// can check the spans' names, parents and attributes and grep the bytes
// for what must never be exported.
package tracingtest

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Receiver is a running OTLP/HTTP trace endpoint.
type Receiver struct {
	URL string // the endpoint: OTEL_EXPORTER_OTLP_ENDPOINT

	srv   *httptest.Server
	mu    sync.Mutex
	raw   [][]byte
	spans []*tracepb.Span
}

// NewReceiver starts a receiver, closed when the test ends.
func NewReceiver(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	r.URL = r.srv.URL
	t.Cleanup(r.srv.Close)
	return r
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != "POST" || req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want POST /v1/traces application/x-protobuf", http.StatusBadRequest)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.raw = append(r.raw, b)
	for _, rs := range msg.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			r.spans = append(r.spans, ss.Spans...)
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// Received returns the spans received so far, indexed, and every byte of
// the requests that carried them.
func (r *Receiver) Received() (Spans, []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return newSpans(r.spans), bytes.Join(r.raw, nil)
}

// Spans are received spans by trace.
type Spans struct {
	All    []*tracepb.Span
	Traces map[string][]*tracepb.Span // by hex trace id
}

func newSpans(all []*tracepb.Span) Spans {
	s := Spans{All: slices.Clone(all), Traces: map[string][]*tracepb.Span{}}
	for _, sp := range all {
		tid := hex.EncodeToString(sp.TraceId)
		s.Traces[tid] = append(s.Traces[tid], sp)
	}
	return s
}

// Children are the names of the spans whose parent is sp, in the order
// they started.
func (s Spans) Children(sp *tracepb.Span) []string {
	var kids []*tracepb.Span
	for _, c := range s.Traces[hex.EncodeToString(sp.TraceId)] {
		if bytes.Equal(c.ParentSpanId, sp.SpanId) {
			kids = append(kids, c)
		}
	}
	slices.SortStableFunc(kids, func(a, b *tracepb.Span) int {
		switch {
		case a.StartTimeUnixNano < b.StartTimeUnixNano:
			return -1
		case a.StartTimeUnixNano > b.StartTimeUnixNano:
			return 1
		}
		return 0
	})
	return Names(kids)
}

// Named returns the only span of trace tid named name, failing the test
// when there is none or more than one.
func (s Spans) Named(t testing.TB, tid, name string) *tracepb.Span {
	t.Helper()
	var found *tracepb.Span
	for _, sp := range s.Traces[tid] {
		if sp.Name == name {
			if found != nil {
				t.Fatalf("trace %s: two spans named %q", tid, name)
			}
			found = sp
		}
	}
	if found == nil {
		t.Fatalf("trace %s: no span named %q (spans: %v)", tid, name, Names(s.Traces[tid]))
	}
	return found
}

// Names are the spans' names.
func Names(spans []*tracepb.Span) []string {
	var out []string
	for _, sp := range spans {
		out = append(out, sp.Name)
	}
	return out
}

// Attr is a span's attribute as a string ("" when absent): integers in
// decimal, string arrays joined with commas.
func Attr(sp *tracepb.Span, key string) string {
	for _, kv := range sp.Attributes {
		if kv.Key != key {
			continue
		}
		switch v := kv.Value.Value.(type) {
		case *commonpb.AnyValue_StringValue:
			return v.StringValue
		case *commonpb.AnyValue_IntValue:
			return strconv.FormatInt(v.IntValue, 10)
		case *commonpb.AnyValue_BoolValue:
			return strconv.FormatBool(v.BoolValue)
		case *commonpb.AnyValue_ArrayValue:
			var s []string
			for _, e := range v.ArrayValue.Values {
				s = append(s, e.GetStringValue())
			}
			return strings.Join(s, ",")
		}
	}
	return ""
}
