package tracing

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of rulelock's spans.
const ScopeName = "github.com/rulelock/rulelock"

// Exporter is a running OTLP exporter (FromEnv).
type Exporter struct {
	Tracer   trace.Tracer // nil when tracing is off
	Endpoint string       // what OTEL_* said, for the start-up log ("" for the default)
	provider *sdktrace.TracerProvider
}

// Shutdown exports what is buffered and stops the exporter (a no-op when
// tracing is off).
func (e *Exporter) Shutdown(ctx context.Context) error {
	if e == nil || e.provider == nil {
		return nil
	}
	return e.provider.Shutdown(ctx)
}

// FromEnv reads the standard OpenTelemetry environment (getenv is
// os.Getenv in rulelock serve) and returns the exporter it asks for:
//
//   - OTEL_SDK_DISABLED=true: off.
//   - OTEL_TRACES_EXPORTER=none: off; =otlp: on; unset: on when
//     OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
//     is set, off otherwise (the default). Any other exporter is an error.
//   - OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL: http/protobuf (the default);
//     grpc and http/json are errors.
//
// The rest (OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT,
// _COMPRESSION, _CERTIFICATE…, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_TRACES_SAMPLER[_ARG], OTEL_BSP_*) is read by the OpenTelemetry SDK
// itself, as its specification says. The service name defaults to
// "rulelock". Spans are exported in batches from a background goroutine:
// a slow or absent collector drops spans, it never delays a decision.
func FromEnv(ctx context.Context, getenv func(string) string, version string) (*Exporter, error) {
	on, err := enabled(getenv)
	if err != nil || !on {
		return &Exporter{}, err
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing: otlp exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "rulelock"), attribute.String("service.version", version)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES: after, so they win
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		endpoint = getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	return &Exporter{Tracer: tp.Tracer(ScopeName, trace.WithInstrumentationVersion(version)), Endpoint: endpoint, provider: tp}, nil
}

// enabled says whether the environment turns tracing on.
func enabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := strings.TrimSpace(getenv(k)); p != "" && p != "http/protobuf" {
			return false, fmt.Errorf("tracing: %s=%q: rulelock exports OTLP over http/protobuf only", k, p)
		}
	}
	switch x := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); x {
	case "none":
		return false, nil
	case "otlp":
		return true, nil
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
	default:
		return false, fmt.Errorf("tracing: OTEL_TRACES_EXPORTER=%q: rulelock exports traces with otlp (or none)", x)
	}
}
