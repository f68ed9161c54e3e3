package bench

// The MCP proxy's added latency per tools/call, over stdio: an agent (the
// official Go SDK's client) calls an "echo" tool of an MCP server (the Go
// SDK's server in a subprocess, this test binary re-executed) directly, and
// through rulelock (mcpproxy.ServeStdio in this process, on OS pipes, in
// front of the same kind of subprocess). The log is on the real disk, on
// tmpfs (/dev/shm, where fdatasync is nearly free: not a deployment
// configuration, it separates the durable log from the proxy's CPU), or
// replaced by an in-memory recorder.
//
//	cd bench && go test -run '^$' -bench MCPCall -benchtime 2000x -count 5 .
//
// docs/benchmarks.md ("MCP proxy (issue 15)") has the numbers and the
// profile; BenchmarkMCPFloor (mcp_floor_test.go) sets them against the
// durable floor.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/mcpproxy"
	"github.com/rulelock/rulelock/policy"
)

// mcpEchoEnv, set in the environment, makes the test binary an MCP server
// on stdio with one tool, "echo" (see TestMain).
const mcpEchoEnv = "RULELOCK_BENCH_MCP_ECHO"

// mcpPolicy allows echo unless the text holds "secret": a condition is what
// must hold, and NoSecrets denies the call when it does not.
const mcpPolicy = `policy "bench-mcp" { default: deny }

rule "Echo" {
  precondition: action.type == "up.echo"
  condition: !action.text.contains("secret")
  allow
}

rule "NoSecrets" {
  precondition: action.type == "up.echo"
  condition: !action.text.contains("secret")
  deny: "no secrets"
}
`

func TestMain(m *testing.M) {
	if kind := os.Getenv(benchServerEnv); kind != "" {
		if err := serveBench(kind); err != nil {
			fmt.Fprintln(os.Stderr, "bench server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if kind := os.Getenv(rssEnv); kind != "" {
		flag.Parse()
		if err := rssChild(kind); err != nil {
			fmt.Fprintln(os.Stderr, "rss child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(mcpEchoEnv) != "" {
		if err := serveMCPEcho(); err != nil {
			fmt.Fprintln(os.Stderr, "mcp echo server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// newMCPEcho is the upstream: the Go SDK's server with an echo tool.
func newMCPEcho() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "bench-echo", Version: "1"}, nil)
	s.AddTool(&mcp.Tool{Name: "echo", Description: "Echoes its text.",
		InputSchema: json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}`)},
		func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var in struct{ Text string }
			if err := json.Unmarshal(req.Params.Arguments, &in); err != nil {
				return nil, err
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "echo: " + in.Text}}}, nil
		})
	return s
}

func serveMCPEcho() error {
	return newMCPEcho().Run(context.Background(), &mcp.StdioTransport{})
}

// echoCommand starts this test binary as the echo server.
func echoCommand() *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{mcpEchoEnv + "=1"}
	cmd.Stderr = os.Stderr
	return cmd
}

func newMCPClient() *mcp.Client {
	return mcp.NewClient(&mcp.Implementation{Name: "bench-agent", Version: "1"}, nil)
}

// mcpDirect connects the agent to the echo server in a subprocess.
func mcpDirect(tb testing.TB, ctx context.Context) *mcp.ClientSession {
	tb.Helper()
	cs, err := newMCPClient().Connect(ctx, &mcp.CommandTransport{Command: echoCommand()}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cs.Close() })
	return cs
}

// mcpDirectInProcess connects the agent to the echo server in this process
// over OS pipes: the SDK's cost without a second process.
func mcpDirectInProcess(tb testing.TB, ctx context.Context) *mcp.ClientSession {
	tb.Helper()
	cIn, sOut := pipe(tb)
	sIn, cOut := pipe(tb)
	go newMCPEcho().Run(ctx, &mcp.IOTransport{Reader: sIn, Writer: sOut})
	cs, err := newMCPClient().Connect(ctx, &mcp.IOTransport{Reader: cIn, Writer: cOut}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cs.Close() })
	return cs
}

func pipe(tb testing.TB) (*os.File, *os.File) {
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// mcpProxied connects the agent to rulelock's proxy, served over OS pipes
// in this process, in front of the echo server in a subprocess. The log is
// opened in logDir, or is an in-memory recorder when logDir is "".
func mcpProxied(tb testing.TB, ctx context.Context, logDir string) *mcp.ClientSession {
	tb.Helper()
	var rec gateway.Recorder = &memRecorder{}
	if logDir != "" {
		l, err := audit.Open(logDir, audit.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { l.Close() })
		rec = l
	}
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
	cIn, pOut := pipe(tb)
	pIn, cOut := pipe(tb)
	go proxy.ServeStdio(ctx, policy.Agent{ID: "agent-bench", Roles: []string{"bot"}}, pIn, pOut)
	cs, err := newMCPClient().Connect(ctx, &mcp.IOTransport{Reader: cIn, Writer: cOut}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cs.Close() })
	return cs
}

// shmDir returns a fresh directory on /dev/shm, or "" when there is none.
func shmDir(tb testing.TB) string {
	if fi, err := os.Stat("/dev/shm"); err != nil || !fi.IsDir() {
		return ""
	}
	dir, err := os.MkdirTemp("/dev/shm", "rulelock-bench-mcp-")
	if err != nil {
		return ""
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// BenchmarkMCPCall measures one tools/call at a time, per call: p50 and
// p99 latency and ns/op. Every variant is set up first, so that with
// -count N the variants run in turn under the same load.
func BenchmarkMCPCall(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	shm := shmDir(b)
	type variant struct {
		name string
		cs   *mcp.ClientSession
		text string // "secret" is denied
	}
	vs := []variant{
		{name: "direct", cs: mcpDirect(b, ctx), text: "hello"},
		{name: "direct-inprocess", cs: mcpDirectInProcess(b, ctx), text: "hello"},
		{name: "proxy-disk", cs: mcpProxied(b, ctx, b.TempDir()), text: "hello"},
	}
	if shm != "" {
		vs = append(vs, variant{name: "proxy-tmpfs", cs: mcpProxied(b, ctx, shm), text: "hello"})
	}
	vs = append(vs, variant{name: "proxy-memlog", cs: mcpProxied(b, ctx, ""), text: "hello"},
		variant{name: "deny-disk", cs: mcpProxied(b, ctx, b.TempDir()), text: "a secret"})
	if shm2 := shmDir(b); shm2 != "" {
		vs = append(vs, variant{name: "deny-tmpfs", cs: mcpProxied(b, ctx, shm2), text: "a secret"})
	}
	for _, v := range vs {
		b.Run(v.name, func(b *testing.B) {
			name := "echo"
			if v.name != "direct" && v.name != "direct-inprocess" {
				name = "up.echo"
			}
			params := &mcp.CallToolParams{Name: name, Arguments: map[string]any{"text": v.text}}
			wantErr := v.text == "a secret"
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				t0 := time.Now()
				res, err := v.cs.CallTool(ctx, params)
				lat = append(lat, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				if res.IsError != wantErr {
					b.Fatalf("isError %v, want %v: %+v", res.IsError, wantErr, res.Content)
				}
			}
			reportLatency(b, lat)
		})
	}
}

// BenchmarkMCPAdded interleaves the variants call by call (one op is one
// call of each, in turn), so that the shared machine's load falls on all of
// them alike, and reports each one's p50 and p99 and the p50 the proxy adds
// to the direct call. Its ns/op is the sum of the four calls.
func BenchmarkMCPAdded(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	shm := shmDir(b)
	if shm == "" {
		b.Skip("no /dev/shm")
	}
	names := []string{"direct", "disk", "tmpfs", "memlog"}
	sessions := []*mcp.ClientSession{mcpDirect(b, ctx), mcpProxied(b, ctx, b.TempDir()), mcpProxied(b, ctx, shm), mcpProxied(b, ctx, "")}
	direct := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hello"}}
	proxied := &mcp.CallToolParams{Name: "up.echo", Arguments: map[string]any{"text": "hello"}}
	lat := make([][]time.Duration, len(sessions))
	for b.Loop() {
		for i, cs := range sessions {
			params := proxied
			if i == 0 {
				params = direct
			}
			t0 := time.Now()
			res, err := cs.CallTool(ctx, params)
			lat[i] = append(lat[i], time.Since(t0))
			if err != nil || res.IsError {
				b.Fatalf("%s: %v %+v", names[i], err, res)
			}
		}
	}
	p50 := make([]time.Duration, len(lat))
	for i, l := range lat {
		slices.Sort(l)
		p50[i] = l[len(l)/2]
		b.ReportMetric(float64(p50[i].Nanoseconds())/1e3, names[i]+"-p50-µs")
		b.ReportMetric(float64(l[len(l)*99/100].Nanoseconds())/1e3, names[i]+"-p99-µs")
	}
	for i := 1; i < len(p50); i++ {
		b.ReportMetric(float64((p50[i]-p50[0]).Nanoseconds())/1e3, names[i]+"-added-p50-µs")
	}
}

// TestMCPEcho checks that every variant of BenchmarkMCPCall answers as
// expected (it asserts results, never times).
func TestMCPEcho(t *testing.T) {
	ctx := t.Context()
	for name, cs := range map[string]*mcp.ClientSession{
		"direct":           mcpDirect(t, ctx),
		"direct-inprocess": mcpDirectInProcess(t, ctx),
		"proxy-disk":       mcpProxied(t, ctx, t.TempDir()),
		"proxy-memlog":     mcpProxied(t, ctx, ""),
	} {
		tool := "up.echo"
		if name == "direct" || name == "direct-inprocess" {
			tool = "echo"
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": "hi"}})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(res.Content) != 1 || res.IsError {
			t.Fatalf("%s: got %+v, want one text", name, res)
		}
		if got, want := res.Content[0].(*mcp.TextContent).Text, "echo: hi"; got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
		if tool == "echo" {
			continue
		}
		res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": "a secret"}})
		if err != nil || !res.IsError {
			t.Errorf("%s: denied call: got %+v, %v, want an isError result", name, res, err)
		}
	}
}
