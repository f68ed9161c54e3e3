package tracing

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		env     map[string]string
		on      bool
		wantErr bool
	}{
		{env: nil, on: false},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, on: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, on: false},
		{env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, on: false},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "console"}, wantErr: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, wantErr: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, wantErr: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, on: true},
	} {
		on, err := enabled(func(k string) string { return tc.env[k] })
		if on != tc.on || (err != nil) != tc.wantErr {
			t.Errorf("%v: on %v, err %v; want on %v, error %v", tc.env, on, err, tc.on, tc.wantErr)
		}
	}
}

func TestFromEnvOff(t *testing.T) {
	x, err := FromEnv(context.Background(), func(string) string { return "" }, "test")
	if err != nil || x.Tracer != nil {
		t.Fatalf("FromEnv with no OTEL_*: tracer %v, err %v; want off", x.Tracer, err)
	}
	if err := x.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestTraceparent(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	if got, want := Traceparent(sc), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"; got != want {
		t.Errorf("Traceparent = %q, want %q", got, want)
	}
	if got := Traceparent(trace.SpanContext{}); got != "" {
		t.Errorf("Traceparent of an invalid context = %q, want none", got)
	}
}

func TestStartOff(t *testing.T) {
	ctx := context.Background()
	got, sp := Start(ctx, nil, SpanDecide)
	if got != ctx || sp.IsRecording() {
		t.Errorf("Start with no tracer changed the context or records")
	}
	if n := testing.AllocsPerRun(100, func() {
		_, sp := Start(ctx, nil, SpanDecide)
		sp.End()
	}); n != 0 {
		t.Errorf("Start with no tracer allocates %v times", n)
	}
}
