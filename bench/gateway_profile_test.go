package bench

// Where the gateway's time goes: the same HTTP API as `rulelock serve`,
// wired in this process (as cmd/rulelock/serve.go wires it), so that it can
// be CPU-profiled, with the durable audit log and with the log replaced by
// an in-memory recorder (no encoding, no write, no fsync):
//
//	cd bench && go test -run TestProfileGateway -v -timeout 30m . -load.profile /tmp/gwprof
//	go tool pprof -top /tmp/gwprof/decide-durable.pprof
//
// Skipped without -load.profile. The load generator runs in the same
// process, so its own work (HTTP client, JSON-free checks) is in the
// profiles too; the functions tell the two apart.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/bench/loadgen"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/policy"
)

var loadProfile = flag.String("load.profile", "", "run TestProfileGateway and write its CPU profiles into this directory")

// memRecorder is a gateway.Recorder that keeps nothing: the gateway without
// the cost of its log.
type memRecorder struct{ n atomic.Int64 }

func (m *memRecorder) Append(_ context.Context, e *audit.Entry) (audit.Receipt, error) {
	i := m.n.Add(1) - 1
	return audit.Receipt{Index: i, LeafHash: sha256.Sum256([]byte(e.RequestID))}, nil
}

// inProcessGateway serves the HTTP API on a loopback port with the seed
// rule, one agent per token and an executor for "transfer" at upstream; the
// log is durable unless mem.
func inProcessGateway(t *testing.T, tokens []string, upstream string, mem bool) (url string) {
	t.Helper()
	ctx := t.Context()
	p := examplePolicy(t, "seed")
	var rec gateway.Recorder = &memRecorder{}
	var logAPI httpapi.LogAPI
	if !mem {
		dir := t.TempDir()
		l, err := audit.Open(filepath.Join(dir, "log"), audit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		skey, _, err := note.GenerateKey(nil, "bench.rulelock/log")
		if err != nil {
			t.Fatal(err)
		}
		signer, _ := note.NewSigner(skey)
		cp, err := audit.NewCheckpointer(l, signer, audit.CheckpointOptions{TilesDir: filepath.Join(dir, "tiles")})
		if err != nil {
			t.Fatal(err)
		}
		cpCtx, stop := context.WithCancel(context.Background())
		cpDone := make(chan error, 1)
		go func() { cpDone <- cp.Run(cpCtx, time.Second) }()
		t.Cleanup(func() { stop(); <-cpDone; l.Close() })
		rec, logAPI = l, &httpapi.AuditLog{Log: l, Checkpointer: cp, TilesDir: filepath.Join(dir, "tiles")}
	}
	ex := &gateway.HTTPExecutor{Method: "POST", URL: upstream + "/v1/payees/{to}/transfers",
		Client: &http.Client{Timeout: 10 * time.Second, CheckRedirect: gateway.NoRedirects}}
	gw, err := gateway.New(gateway.Config{Policy: p, Log: rec, Executors: map[string]gateway.Executor{"transfer": ex}})
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Activate(ctx, &gateway.Active{Policy: p, Digest: p.Digest(), Dev: true, Source: "examples/seed"}); err != nil {
		t.Fatal(err)
	}
	var toks []httpapi.Token
	for i, tok := range tokens {
		toks = append(toks, httpapi.Token{SHA256: sha256.Sum256([]byte(tok)), Agent: policy.Agent{ID: fmt.Sprintf("agent-%03d", i), Roles: []string{"payments"}}})
	}
	cfg := httpapi.Config{Gateway: gw, Tokens: toks, Ready: func() bool { return true }}
	if logAPI != nil {
		cfg.Log = logAPI
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.NewHTTPServer(ln.Addr().String(), httpapi.New(cfg))
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func TestProfileGateway(t *testing.T) {
	if *loadProfile == "" {
		t.Skip("runs with -load.profile DIR")
	}
	if err := os.MkdirAll(*loadProfile, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"done"}`))
	}))
	defer upstream.Close()
	tokens := make([]string, *loadAgents)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("bench-token-%03d", i)
	}
	target := func(url string, wantOutcome bool) loadgen.Target {
		return loadgen.Target{
			Request: agentRequests(url, tokens),
			Check: func(status int, b []byte) error {
				if status != 200 || !bytes.Contains(b, []byte(`"decision":"allow"`)) ||
					wantOutcome && !bytes.Contains(b, []byte(`"status":"ok"`)) {
					return fmt.Errorf("status %d: %.300s", status, b)
				}
				return nil
			},
		}
	}
	for _, sc := range []struct {
		name    string
		path    string
		mem     bool
		outcome bool
	}{
		{"decide-durable", "/v1/decide", false, false},
		{"decide-memlog", "/v1/decide", true, false},
		{"actions-durable", "/v1/actions", false, true},
		{"actions-memlog", "/v1/actions", true, true},
	} {
		url := inProcessGateway(t, tokens, upstream.URL, sc.mem) + sc.path
		openLoop(t, ctx, sc.name, 0, target(url, sc.outcome))
		f, err := os.Create(filepath.Join(*loadProfile, sc.name+".pprof"))
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		closedLoop(t, ctx, sc.name, 0, target(url, sc.outcome))
		pprof.StopCPUProfile()
		f.Close()
	}
}
