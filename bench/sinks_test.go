package bench

import (
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// The sinks TestLoad can point `rulelock serve` at: an OTLP/HTTP trace
// endpoint (-load.otlp) and a decision-stream receiver (-load.export).

var (
	loadOTLP   = flag.Bool("load.otlp", false, "rulelock: trace every request, exporting over OTLP/HTTP to a sink in this process (OTEL_EXPORTER_OTLP_ENDPOINT)")
	loadExport = flag.Bool("load.export", false, "rulelock: run the exporter inside serve (export: in the config), streaming the log to a sink in this process")
)

// exportEndpoint is the export sink's URL while TestLoad runs with
// -load.export ("" otherwise): startRulelock puts it in the config's
// export block.
var exportEndpoint string

// otlpEndpoint is the OTLP sink's URL while TestLoad runs with -load.otlp
// ("" otherwise): startRulelock gives it to `rulelock serve` as
// OTEL_EXPORTER_OTLP_ENDPOINT.
var otlpEndpoint string

// loadSink reads and acknowledges each POST and counts them: for OTLP, the
// collector's side of the wire without a collector's pipeline (an empty
// ExportTraceServiceResponse is a valid reply); for the exporter, a SIEM
// that takes every batch at once.
type loadSink struct {
	exports, bytes atomic.Int64
}

// startSink starts a sink (OTLP or export: both only need a 2xx).
func startSink(t *testing.T) (*loadSink, string) {
	s := &loadSink{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		s.exports.Add(1)
		s.bytes.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return s, srv.URL
}
