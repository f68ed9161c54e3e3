package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/rulelock/rulelock/internal/tracing/tracingtest"
)

const tracedPolicy = `policy "traced" {
  default: deny
}

action "pay_card" {
  amount: number
  card_number: string sensitive
}

rule "AllowCards" {
  precondition: action.type == "pay_card"
  allow
}

rule "SmallOnly" {
  precondition: action.type == "pay_card"
  condition: action.amount <= 100
  deny: "at most 100"
}
`

// TestTracesOverHTTP runs the gateway with OTLP export configured by the
// standard environment to a real OTLP/HTTP receiver, and an HTTP upstream:
// each request is one trace with the pipeline's spans under the API's
// server span (itself under the agent's traceparent when it sent one), with
// the request id, decision and rules, and without the token, the
// instruction, the reasoning or the sensitive value; the upstream receives
// the traceparent of the gateway's execute span.
func TestTracesOverHTTP(t *testing.T) {
	recv := tracingtest.NewReceiver(t)
	var upMu sync.Mutex
	var upTraceparent []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upMu.Lock()
		upTraceparent = append(upTraceparent, r.Header.Get("Traceparent"))
		upMu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"charged":true}`)
	}))
	defer upstream.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL)
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	t.Setenv("OTEL_SERVICE_NAME", "rulelock-test")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "20")

	dir := t.TempDir()
	pol := filepath.Join(dir, "policy")
	if err := os.MkdirAll(pol, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pol, "traced.rules"), []byte(tracedPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	cfg := devConfig(data)
	cfg.Policy = pol
	cfg.Executors = map[string]executorConfig{"pay_card": {Method: "POST", URL: upstream.URL + "/charge"}}
	stderr := &syncBuffer{}
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: stderr, getenv: os.Getenv}
	g, stop := runServing(t, e, cfg, false)
	url := "http://" + g.ln.Addr().String()
	waitReady(t, url)
	tok, err := os.ReadFile(filepath.Join(data, "agent.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := string(tok)
	if !strings.Contains(stderr.String(), "tracing: exporting spans over OTLP/HTTP to "+recv.URL) {
		t.Errorf("serve did not say it exports traces:\n%s", stderr)
	}

	const (
		instruction = "INSTRUCTION-pay-the-florist"
		reasoning   = "REASONING-the-user-asked-twice"
		card        = "4111111111111111"
		agentTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
		agentSpan   = "00f067aa0ba902b7"
	)
	body := `{"action":{"type":"pay_card","amount":42,"card_number":"` + card + `"},"instruction":"` + instruction + `","reasoning":"` + reasoning + `"}`
	req, _ := http.NewRequest("POST", url+"/v1/actions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", "00-"+agentTrace+"-"+agentSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var allowed map[string]any
	err = json.NewDecoder(resp.Body).Decode(&allowed)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if decisionOf(allowed) != "allow" {
		t.Fatalf("allowed request: %v", allowed)
	}
	denied := post(t, url, token, `{"action":{"type":"pay_card","amount":500,"card_number":"`+card+`"},"instruction":"`+instruction+`"}`)
	if decisionOf(denied) != "deny" {
		t.Fatalf("denied request: %v", denied)
	}
	if status, _ := postJSON(t, url+"/v1/actions", token, `{"action":{"type":"pay_card"},"bogus":"`+card+`"}`); status != 400 {
		t.Fatalf("malformed request: status %d", status)
	}
	if err := stop(); err != nil { // flushes the exporter
		t.Fatal(err)
	}

	st, raw := recv.Received()
	if len(st.Traces) != 3 {
		t.Fatalf("got %d traces, want 3 (one per request): %v", len(st.Traces), tracingtest.Names(st.All))
	}
	for _, secret := range []string{token, card, instruction, reasoning} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the exported spans contain %q", secret)
		}
	}
	if !bytes.Contains(raw, []byte("rulelock-test")) {
		t.Errorf("OTEL_SERVICE_NAME is not the service name of the exported spans")
	}

	// The allowed request: in the agent's trace, under its span.
	root := st.Named(t, agentTrace, "POST /v1/actions")
	if got := hex.EncodeToString(root.ParentSpanId); got != agentSpan {
		t.Errorf("server span's parent = %s, want the agent's span %s", got, agentSpan)
	}
	if root.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("server span kind = %v", root.Kind)
	}
	want := []string{"rulelock.authenticate", "rulelock.decode", "rulelock.decide", "rulelock.record_decision", "rulelock.execute", "rulelock.record_outcome"}
	if got := st.Children(root); !slices.Equal(got, want) {
		t.Errorf("allowed request's spans = %v, want %v", got, want)
	}
	for k, v := range map[string]string{
		"rulelock.request.id": allowed["request_id"].(string), "rulelock.decision": "allow", "rulelock.rules": "AllowCards",
		"rulelock.action.type": "pay_card", "http.route": "/v1/actions", "http.response.status_code": "200",
	} {
		if got := tracingtest.Attr(root, k); got != v {
			t.Errorf("server span %s = %q, want %q", k, got, v)
		}
	}
	outcome := st.Named(t, agentTrace, "rulelock.record_outcome")
	if got, want := tracingtest.Attr(outcome, "rulelock.log.index"), itoaJSON(allowed["outcome_receipt"].(map[string]any)["index"]); got != want {
		t.Errorf("record_outcome's log index = %s, want %s", got, want)
	}
	exec := st.Named(t, agentTrace, "rulelock.execute")
	upMu.Lock()
	gotTP := slices.Clone(upTraceparent)
	upMu.Unlock()
	if wantTP := "00-" + agentTrace + "-" + hex.EncodeToString(exec.SpanId) + "-01"; len(gotTP) != 1 || gotTP[0] != wantTP {
		t.Errorf("upstream saw traceparent %q, want [%s]", gotTP, wantTP)
	}
	if got := tracingtest.Attr(exec, "rulelock.outcome.status"); got != "ok" {
		t.Errorf("execute span outcome = %q", got)
	}

	// The denied and the malformed request: a trace each, no execution.
	var seen []string
	for tid, sps := range st.Traces {
		if tid == agentTrace {
			continue
		}
		root := st.Named(t, tid, "POST /v1/actions")
		if len(root.ParentSpanId) != 0 {
			t.Errorf("a request without traceparent has a parent span")
		}
		var want []string
		switch tracingtest.Attr(root, "rulelock.decision") {
		case "deny":
			if tracingtest.Attr(root, "rulelock.reason") == "bad_request" {
				want = []string{"rulelock.authenticate", "rulelock.decode", "rulelock.record_decision"}
				break
			}
			want = []string{"rulelock.authenticate", "rulelock.decode", "rulelock.decide", "rulelock.record_decision"}
			if got := tracingtest.Attr(root, "rulelock.rules"); got != "AllowCards,SmallOnly" {
				t.Errorf("denied request's rules = %q", got)
			}
			if got := tracingtest.Attr(root, "rulelock.request.id"); got != denied["request_id"] {
				t.Errorf("denied request's id = %q, want %v", got, denied["request_id"])
			}
		default:
			t.Errorf("trace %s: decision %q (%v)", tid, tracingtest.Attr(root, "rulelock.decision"), tracingtest.Names(sps))
			continue
		}
		seen = append(seen, tracingtest.Attr(root, "rulelock.reason"))
		if got := st.Children(root); !slices.Equal(got, want) {
			t.Errorf("request (reason %s): spans %v, want %v", tracingtest.Attr(root, "rulelock.reason"), got, want)
		}
	}
	if slices.Sort(seen); !slices.Equal(seen, []string{"bad_request", "denied_by_rule"}) {
		t.Errorf("the other traces' reasons = %v", seen)
	}
}

func itoaJSON(v any) string {
	f, _ := v.(float64)
	return strconv.FormatInt(int64(f), 10)
}
