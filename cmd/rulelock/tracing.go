package main

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/rulelock/rulelock/internal/tracing"
)

// startTracing starts the OTLP trace exporter when the standard OTEL_*
// environment asks for one (tracing.FromEnv; docs/operations.md,
// Tracing). Off, it returns an exporter whose Tracer is nil.
func startTracing(ctx context.Context, e *env) (*tracing.Exporter, error) {
	x, err := tracing.FromEnv(ctx, e.getenv, moduleVersion())
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("invalid environment: %v", err)}
	}
	if x.Tracer != nil {
		to := x.Endpoint
		if to == "" {
			to = "the default endpoint (http://localhost:4318)"
		}
		fmt.Fprintf(e.stderr, "rulelock: tracing: exporting spans over OTLP/HTTP to %s\n", to)
	}
	return x, nil
}

// moduleVersion is rulelock's module version, "(devel)" when unknown.
func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// stopTracing exports the spans still buffered, waiting up to 5s.
func stopTracing(x *tracing.Exporter) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = x.Shutdown(ctx) // spans are not the audit log: what is not exported is lost, nothing else
}
