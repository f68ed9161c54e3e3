package httpapi_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/rulelock/rulelock/internal/tracing"
	"github.com/rulelock/rulelock/internal/tracing/tracingtest"
)

// BenchmarkDecideTraced is BenchmarkDecide's log=encoding with tracing on:
// every request sampled, its spans batched and exported over OTLP/HTTP to
// a receiver on loopback (tracingtest, which decodes every export), as
// `rulelock serve` does with OTEL_EXPORTER_OTLP_ENDPOINT set. Compare it
// with BenchmarkDecide/log=encoding (tracing off) with benchstat.
func BenchmarkDecideTraced(b *testing.B) {
	recv := tracingtest.NewReceiver(b)
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(recv.URL+"/v1/traces"))
	if err != nil {
		b.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	defer tp.Shutdown(context.Background())
	b.Run("log=encoding", func(b *testing.B) {
		benchmarkDecideWith(b, &encodingRecorder{}, 1, tp.Tracer(tracing.ScopeName))
	})
}
