package bench

// The MCP proxy against its durable floor (issue 15, item 9). In the same
// run, call by call in turn, over stdio and over streamable HTTP:
//
//   - direct: the agent (the Go SDK's client) calls the echo tool of the
//     upstream itself;
//   - floor: the same direct call, plus exactly two durable appends to an
//     audit.Log on the same disk (b.TempDir), of the very entries the proxy
//     writes for such a call (its decision before the call, its outcome
//     after), and nothing else: what invariant 8 costs any mediator;
//   - proxy: the same call through rulelock (mcpproxy in this process, log
//     on the same disk, upstream the echo server in a subprocess over stdio);
//   - relay: the least any MCP proxy built on the SDK costs: an SDK server
//     on the proxy's transport whose tool handler calls the upstream
//     through an SDK client, in this process; no policy, no log, no checks.
//     relay − direct is the second JSON-RPC hop every such proxy adds;
//   - memlog: the proxy with its log replaced by an in-memory recorder:
//     memlog − relay is rulelock's own work apart from the two appends.
//
// proxy − floor is the proxy's own overhead: its JSON-RPC hop (the agent's
// transport into rulelock and rulelock's stdio hop to the upstream), the
// decision and the bookkeeping around the two appends.
//
//	cd bench && go test -run '^$' -bench 'MCPFloor' -benchtime 3000x -count 6 .
//
// docs/benchmarks.md ("MCP proxy (issue 15)") has the numbers.

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/mcpproxy"
	"github.com/rulelock/rulelock/policy"
)

// captureRecorder keeps a copy of every entry appended (the floor's
// entries are the proxy's own).
type captureRecorder struct {
	memRecorder
	mu      sync.Mutex
	entries []audit.Entry
}

func (c *captureRecorder) Append(ctx context.Context, e *audit.Entry) (audit.Receipt, error) {
	c.mu.Lock()
	c.entries = append(c.entries, *e)
	c.mu.Unlock()
	return c.memRecorder.Append(ctx, e)
}

// proxyEntries returns the decision and outcome entries the proxy writes
// for one allowed echo call.
func proxyEntries(tb testing.TB, ctx context.Context) (decision, outcome *audit.Entry) {
	tb.Helper()
	rec := &captureRecorder{}
	cs := mcpProxiedWith(tb, ctx, rec, nil)
	rec.mu.Lock()
	rec.entries = nil
	rec.mu.Unlock()
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up.echo", Arguments: map[string]any{"text": "hello"}}); err != nil {
		tb.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.entries) != 2 {
		tb.Fatalf("the proxy wrote %d entries for one call, want 2", len(rec.entries))
	}
	return &rec.entries[0], &rec.entries[1]
}

// mcpProxiedWith is mcpProxied with the recorder given; with serveHTTP
// set, the agent reaches the proxy over /mcp (streamable HTTP, a bearer
// token) rather than stdio.
func mcpProxiedWith(tb testing.TB, ctx context.Context, rec gateway.Recorder, serveHTTP func(http.Handler) string) *mcp.ClientSession {
	tb.Helper()
	p, err := policy.FromSources([]policy.Source{{Name: "bench.rules", Data: []byte(mcpPolicy)}}, policy.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	cmd := echoCommand()
	proxy, err := mcpproxy.New(ctx, mcpproxy.Config{
		Upstreams: []mcpproxy.Upstream{{Name: "up", Command: cmd.Path, Env: cmd.Env, FirstSeen: mcpproxy.FirstSeenExpose}},
		Log:       rec,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { proxy.Close() })
	gw, err := gateway.New(gateway.Config{Policy: p, Log: rec, ExecutorFor: proxy.Executor})
	if err != nil {
		tb.Fatal(err)
	}
	proxy.Attach(gw)
	agent := policy.Agent{ID: "agent-bench", Roles: []string{"bot"}}
	var t mcp.Transport
	if serveHTTP != nil {
		h := proxy.HTTPHandler(func(token string, _ *http.Request) (policy.Agent, bool) {
			return agent, token == "bench-token"
		}, 1<<20)
		t = &mcp.StreamableClientTransport{Endpoint: serveHTTP(h) + "/mcp", HTTPClient: bearerClient("bench-token")}
	} else {
		cIn, pOut := pipe(tb)
		pIn, cOut := pipe(tb)
		go proxy.ServeStdio(ctx, agent, pIn, pOut)
		t = &mcp.IOTransport{Reader: cIn, Writer: cOut}
	}
	cs, err := newMCPClient().Connect(ctx, t, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cs.Close() })
	return cs
}

// serveLoopback serves h on a loopback port until the test ends.
func serveLoopback(tb testing.TB) func(http.Handler) string {
	return func(h http.Handler) string {
		mux := http.NewServeMux()
		mux.Handle("/mcp", h)
		srv := httptest.NewServer(mux)
		tb.Cleanup(srv.Close)
		return srv.URL
	}
}

// bearerClient sends the token on every request.
func bearerClient(token string) *http.Client {
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+token)
		return http.DefaultTransport.RoundTrip(r)
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// mcpDirectHTTP connects the agent over streamable HTTP to the echo server
// (the SDK's handler, on a loopback port in this process).
func mcpDirectHTTP(tb testing.TB, ctx context.Context) *mcp.ClientSession {
	tb.Helper()
	srv := newMCPEcho()
	url := serveLoopback(tb)(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	cs, err := newMCPClient().Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url + "/mcp"}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cs.Close() })
	return cs
}

// mcpRelay connects the agent to a bare SDK relay (see the top of the
// file) in front of the echo server in a subprocess.
func mcpRelay(tb testing.TB, ctx context.Context, serveHTTP func(http.Handler) string) *mcp.ClientSession {
	tb.Helper()
	up := mcpDirect(tb, ctx)
	srv := mcp.NewServer(&mcp.Implementation{Name: "bench-relay", Version: "1"}, nil)
	srv.AddTool(&mcp.Tool{Name: "up.echo", InputSchema: json.RawMessage(`{"type":"object"}`)},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return up.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: req.Params.Arguments})
		})
	var t mcp.Transport
	if serveHTTP != nil {
		url := serveHTTP(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
		t = &mcp.StreamableClientTransport{Endpoint: url + "/mcp"}
	} else {
		cIn, sOut := pipe(tb)
		sIn, cOut := pipe(tb)
		go srv.Run(ctx, &mcp.IOTransport{Reader: sIn, Writer: sOut})
		t = &mcp.IOTransport{Reader: cIn, Writer: cOut}
	}
	cs, err := newMCPClient().Connect(ctx, t, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cs.Close() })
	return cs
}

// openBenchLog opens an audit log in a fresh directory of the disk the
// test's temporary files are on.
func openBenchLog(tb testing.TB) *audit.Log {
	tb.Helper()
	l, err := audit.Open(tb.TempDir(), audit.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

// floorCall is the direct call with the two durable appends around it.
func floorCall(ctx context.Context, l *audit.Log, cs *mcp.ClientSession, params *mcp.CallToolParams, dec, out *audit.Entry) (*mcp.CallToolResult, error) {
	if _, err := l.Append(ctx, dec); err != nil {
		return nil, err
	}
	res, err := cs.CallTool(ctx, params)
	if err != nil {
		return nil, err
	}
	if _, err := l.Append(ctx, out); err != nil {
		return nil, err
	}
	return res, nil
}

// BenchmarkMCPFloor runs direct, floor and proxy call by call in turn
// (one op is one call of each), over stdio and over HTTP, and reports
// each one's p50 and p99 and the proxy's overhead above the floor.
func BenchmarkMCPFloor(b *testing.B) {
	for _, transport := range []string{"stdio", "http"} {
		b.Run(transport, func(b *testing.B) { benchMCPFloor(b, transport) })
	}
}

func benchMCPFloor(b *testing.B, transport string) {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	dec, out := proxyEntries(b, ctx)
	var direct, floorCS, proxy, memlog, relay *mcp.ClientSession
	if transport == "http" {
		direct, floorCS = mcpDirectHTTP(b, ctx), mcpDirectHTTP(b, ctx)
		proxy = mcpProxiedWith(b, ctx, openBenchLog(b), serveLoopback(b))
		memlog = mcpProxiedWith(b, ctx, &memRecorder{}, serveLoopback(b))
		relay = mcpRelay(b, ctx, serveLoopback(b))
	} else {
		direct, floorCS = mcpDirect(b, ctx), mcpDirect(b, ctx)
		proxy = mcpProxiedWith(b, ctx, openBenchLog(b), nil)
		memlog = mcpProxiedWith(b, ctx, &memRecorder{}, nil)
		relay = mcpRelay(b, ctx, nil)
	}
	floorLog := openBenchLog(b)
	directParams := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hello"}}
	proxyParams := &mcp.CallToolParams{Name: "up.echo", Arguments: map[string]any{"text": "hello"}}
	calls := []func() (*mcp.CallToolResult, error){
		func() (*mcp.CallToolResult, error) { return direct.CallTool(ctx, directParams) },
		func() (*mcp.CallToolResult, error) {
			return floorCall(ctx, floorLog, floorCS, directParams, dec, out)
		},
		func() (*mcp.CallToolResult, error) { return proxy.CallTool(ctx, proxyParams) },
		func() (*mcp.CallToolResult, error) { return memlog.CallTool(ctx, proxyParams) },
		func() (*mcp.CallToolResult, error) { return relay.CallTool(ctx, proxyParams) },
	}
	names := []string{"direct", "floor", "proxy", "memlog", "relay"}
	lat := make([][]time.Duration, len(calls))
	for b.Loop() {
		for i, call := range calls {
			t0 := time.Now()
			res, err := call()
			lat[i] = append(lat[i], time.Since(t0))
			if err != nil || res.IsError {
				b.Fatalf("%s: %v %+v", names[i], err, res)
			}
		}
	}
	p50, p99 := make([]time.Duration, len(lat)), make([]time.Duration, len(lat))
	for i, l := range lat {
		slices.Sort(l)
		p50[i], p99[i] = l[len(l)/2], l[len(l)*99/100]
		b.ReportMetric(µs(p50[i]), names[i]+"-p50-µs")
		b.ReportMetric(µs(p99[i]), names[i]+"-p99-µs")
	}
	b.ReportMetric(µs(p50[1]-p50[0]), "floor-direct-p50-µs")
	b.ReportMetric(µs(p50[2]-p50[1]), "proxy-floor-p50-µs")
	b.ReportMetric(µs(p99[2]-p99[1]), "proxy-floor-p99-µs")
	b.ReportMetric(µs(p50[4]-p50[0]), "relay-direct-p50-µs")
	b.ReportMetric(µs(p50[3]-p50[4]), "memlog-relay-p50-µs")
}

func µs(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// TestMCPFloorEntries checks that the floor appends what the proxy
// writes for a call: a decision and an outcome, in that order.
func TestMCPFloorEntries(t *testing.T) {
	dec, out := proxyEntries(t, t.Context())
	if dec.Kind != audit.KindDecision || out.Kind != audit.KindOutcome {
		t.Errorf("got kinds %v, %v, want decision, outcome", dec.Kind, out.Kind)
	}
}
