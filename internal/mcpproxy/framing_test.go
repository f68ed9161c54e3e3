package mcpproxy_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/mcpproxy"
	"github.com/rulelock/rulelock/policy"
)

// Calls the hostile messages try to smuggle past the proxy.
const (
	callA = `{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"up.echo","arguments":{"text":"A"}}}`
	callB = `{"jsonrpc":"2.0","id":22,"method":"tools/call","params":{"name":"up.echo","arguments":{"text":"B"}}}`
)

// hostileMessage is one message an agent should not get past the strict
// reading, as raw bytes on stdio (a line, with its "\n" when it has one)
// and as the body of a POST to /mcp ("" where the case is stdio's alone),
// with the refusal code logged and the JSON-RPC error code answered.
type hostileMessage struct {
	name        string
	stdio, http string
	code        string // the refusal's code in the log
	httpCode    string // when it differs on /mcp
	rpc         int
	id          any // the id the error answers, nil for null
}

var hostileMessages = []hostileMessage{
	{name: "a carriage return hides a batch",
		stdio: `{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\r[" + callA + "," + callB + "]\n",
		http:  `{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\r[" + callA + "," + callB + "]",
		code:  "bad_framing", httpCode: "bad_message", rpc: -32700},
	{name: "a batch", stdio: "[" + callA + "," + callB + "]\n", http: "[" + callA + "," + callB + "]", code: "batch", rpc: -32600},
	{name: "two messages in one", stdio: callA + callB + "\n", http: callA + callB, code: "bad_message", rpc: -32700},
	{name: "two messages split by a carriage return", stdio: callA + "\r" + callB + "\n", http: callA + "\r" + callB, code: "bad_framing", httpCode: "bad_message", rpc: -32700},
	{name: "a CRLF line end", stdio: callA + "\r\n", code: "bad_framing", rpc: -32700},
	{name: "name twice",
		stdio: `{"jsonrpc":"2.0","id":23,"method":"tools/call","params":{"name":"up.echo","arguments":{"text":"A"},"name":"up.slow"}}` + "\n",
		code:  "bad_message", rpc: -32700, id: 23.0},
	{name: "arguments twice",
		stdio: `{"jsonrpc":"2.0","id":24,"method":"tools/call","params":{"name":"up.echo","arguments":{"text":"A"},"arguments":{"text":"B"}}}` + "\n",
		code:  "bad_message", rpc: -32700, id: 24.0},
	{name: "name and Name",
		stdio: `{"jsonrpc":"2.0","id":25,"method":"tools/call","params":{"name":"up.echo","Name":"up.slow","arguments":{"text":"A"}}}` + "\n",
		code:  "bad_message", rpc: -32700, id: 25.0},
	{name: "arguments and Arguments",
		stdio: `{"jsonrpc":"2.0","id":26,"method":"tools/call","params":{"name":"up.echo","arguments":{"text":"A"},"Arguments":{"text":"B"}}}` + "\n",
		code:  "bad_message", rpc: -32700, id: 26.0},
	{name: "method and Method",
		stdio: `{"jsonrpc":"2.0","id":27,"method":"tools/call","Method":"ping","params":{"name":"up.echo","arguments":{"text":"A"}}}` + "\n",
		code:  "bad_message", rpc: -32700, id: 27.0},
	{name: "params as an array",
		stdio: `{"jsonrpc":"2.0","id":28,"method":"tools/call","params":["up.echo",{"text":"A"}]}` + "\n",
		code:  "bad_params", rpc: -32602, id: 28.0},
	{name: "not JSON-RPC 2.0",
		stdio: `{"jsonrpc":"1.0","id":29,"method":"tools/call","params":{"name":"up.echo","arguments":{"text":"A"}}}` + "\n",
		code:  "bad_request", rpc: -32600},
	{name: "a fractional id",
		stdio: `{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"up.echo","arguments":{"text":"A"}}}` + "\n",
		code:  "bad_request", rpc: -32600},
}

func init() {
	// Where no body is given for /mcp, the line without its "\n" is the
	// body, except for the cases about line ends.
	for i, c := range hostileMessages {
		if c.http == "" && !strings.Contains(c.name, "CRLF") {
			hostileMessages[i].http = strings.TrimSuffix(c.stdio, "\n")
		}
		if c.httpCode == "" {
			hostileMessages[i].httpCode = c.code
		}
	}
}

// rpcReply is a JSON-RPC reply.
type rpcReply struct {
	ID    any `json:"id"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    struct {
			RequestID string `json:"request_id"`
		} `json:"data"`
	} `json:"error"`
	Result json.RawMessage `json:"result"`
}

// checkRefused checks the reply to a hostile message and that its refusal
// is in the log, attributed to agent, with the request id the reply names
// and, unless raw is "", the SHA-256 and size of raw, the bytes sent.
func checkRefused(t *testing.T, f *fixture, c hostileMessage, code, agent, raw, reply string) {
	t.Helper()
	var r rpcReply
	if err := json.Unmarshal([]byte(reply), &r); err != nil || r.Error == nil {
		t.Fatalf("%s: reply %q is not a JSON-RPC error", c.name, reply)
	}
	if r.Error.Code != c.rpc || fmt.Sprint(r.ID) != fmt.Sprint(c.id) {
		t.Errorf("%s: error %d for id %v, want %d for id %v (%s)", c.name, r.Error.Code, r.ID, c.rpc, c.id, r.Error.Message)
	}
	var e *audit.Entry
	for _, x := range f.entries(t) {
		if x.Kind == audit.KindDecision && x.RequestID == r.Error.Data.RequestID {
			e = x
		}
	}
	switch {
	case e == nil:
		t.Errorf("%s: no refusal %q in the log", c.name, r.Error.Data.RequestID)
	case e.Agent != agent || e.Decision != "deny" || !strings.HasPrefix(e.Message, code+": "):
		t.Errorf("%s: logged agent %q decision %q message %q, want %s, deny, %s", c.name, e.Agent, e.Decision, e.Message, agent, code)
	case raw != "" && (e.Raw.Digest != audit.Digest(sha256.Sum256([]byte(raw))) || e.Raw.Size != int64(len(raw))):
		t.Errorf("%s: logged raw %v (%d bytes), want the %d bytes sent", c.name, e.Raw.Digest, e.Raw.Size, len(raw))
	}
}

// rawStdio is an agent writing raw bytes to ServeStdio.
type rawStdio struct {
	in    io.WriteCloser
	lines chan string
	done  chan error
}

func startRawStdio(t *testing.T, f *fixture, agent policy.Agent) *rawStdio {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	agentOut, proxyIn := io.Pipe()
	proxyOut, agentIn := io.Pipe()
	s := &rawStdio{in: proxyIn, lines: make(chan string, 16), done: make(chan error, 1)}
	go func() { s.done <- f.proxy.ServeStdio(ctx, agent, agentOut, agentIn) }()
	go func() {
		sc := bufio.NewScanner(proxyOut)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	t.Cleanup(func() { proxyIn.Close() })
	return s
}

func (s *rawStdio) send(t *testing.T, b string) {
	t.Helper()
	if _, err := io.WriteString(s.in, b); err != nil {
		t.Fatal(err)
	}
}

func (s *rawStdio) next(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-s.lines:
		if !ok {
			t.Fatal("the proxy closed stdout")
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no reply from the proxy")
	}
	return ""
}

func (s *rawStdio) initialize(t *testing.T, version string) {
	t.Helper()
	s.send(t, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+version+`","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`+"\n")
	if l := s.next(t); !strings.Contains(l, `"protocolVersion":"`+version+`"`) {
		t.Fatalf("initialize %s: %s", version, l)
	}
	s.send(t, `{"jsonrpc":"2.0","method":"notifications/initialized"}`+"\n")
}

// TestStdioFraming: on stdio every hostile line is answered with a JSON-RPC
// error and logged as a refusal of the agent; nothing of it reaches the
// upstream, and the session keeps answering afterwards — in a session of
// the protocol version that still had batches and in one that has none.
func TestStdioFraming(t *testing.T) {
	for _, version := range []string{"2025-03-26", "2025-06-18"} {
		t.Run(version, func(t *testing.T) {
			f := newFixture(t, testPolicy)
			s := startRawStdio(t, f, policy.Agent{ID: "agent-a", Roles: []string{"bot"}})
			s.initialize(t, version)
			for _, c := range hostileMessages {
				s.send(t, c.stdio)
				checkRefused(t, f, c, c.code, "agent-a", strings.TrimSuffix(c.stdio, "\n"), s.next(t))
			}
			if got := f.up.received(); len(got) != 0 {
				t.Fatalf("upstream received %q", got)
			}
			s.send(t, callA+"\n")
			var r rpcReply
			if l := s.next(t); json.Unmarshal([]byte(l), &r) != nil || r.Error != nil || !strings.Contains(string(r.Result), "echo: A") {
				t.Fatalf("a call after the refusals: %s", l)
			}
			if got := f.up.received(); len(got) != 1 {
				t.Fatalf("upstream received %q, want the one call", got)
			}
		})
	}
}

// TestStdioUnterminatedLine: input that ends inside a message is refused
// and logged, not read as a message.
func TestStdioUnterminatedLine(t *testing.T) {
	f := newFixture(t, testPolicy)
	s := startRawStdio(t, f, policy.Agent{ID: "agent-a", Roles: []string{"bot"}})
	s.initialize(t, "2025-06-18")
	s.send(t, callA)
	s.in.Close()
	<-s.done
	var found bool
	for _, e := range f.entries(t) {
		found = found || e.Kind == audit.KindDecision && e.Agent == "agent-a" && strings.HasPrefix(e.Message, "bad_framing: ") &&
			e.Raw.Digest == audit.Digest(sha256.Sum256([]byte(callA)))
	}
	if !found {
		t.Error("no bad_framing refusal of agent-a with the bytes sent in the log")
	}
	if got := f.up.received(); len(got) != 0 {
		t.Fatalf("upstream received %q", got)
	}
}

// rawHTTP is an agent posting raw bodies to /mcp.
type rawHTTP struct {
	f       *fixture
	version string
}

func (h rawHTTP) do(t *testing.T, method, token, session, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, h.f.mcp.URL, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", h.version)
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (h rawHTTP) initialize(t *testing.T, token string) string {
	t.Helper()
	resp, body := h.do(t, "POST", token, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+h.version+`","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	sid := resp.Header.Get("Mcp-Session-Id")
	if sid == "" {
		t.Fatalf("initialize: no session id (status %d): %s", resp.StatusCode, body)
	}
	h.do(t, "POST", token, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return sid
}

// TestHTTPFraming: on /mcp every hostile body is answered 400 with a
// JSON-RPC error and logged as a refusal of the agent; nothing of it
// reaches the upstream, and the session keeps working.
func TestHTTPFraming(t *testing.T) {
	for _, version := range []string{"2025-03-26", "2025-06-18"} {
		t.Run(version, func(t *testing.T) {
			f := newFixture(t, testPolicy)
			h := rawHTTP{f, version}
			sid := h.initialize(t, "token-a")
			for _, c := range hostileMessages {
				if c.http == "" {
					continue
				}
				resp, body := h.do(t, "POST", "token-a", sid, c.http)
				if resp.StatusCode != http.StatusBadRequest {
					t.Errorf("%s: status %d, want 400", c.name, resp.StatusCode)
				}
				checkRefused(t, f, c, c.httpCode, "agent-a", c.http, body)
			}
			if got := f.up.received(); len(got) != 0 {
				t.Fatalf("upstream received %q", got)
			}
			if _, body := h.do(t, "POST", "token-a", sid, callA); !strings.Contains(body, "echo: A") {
				t.Fatalf("a call after the refusals: %s", body)
			}
			if got := f.up.received(); len(got) != 1 {
				t.Fatalf("upstream received %q, want the one call", got)
			}
		})
	}
}

// TestForeignSessionLogged: agent B naming agent A's session — to call a
// tool, to open its stream, to delete it — gets 403 with a JSON-RPC error,
// and each attempt is a refusal of agent B in the log. A's session is
// untouched.
func TestForeignSessionLogged(t *testing.T) {
	f := newFixture(t, testPolicy)
	h := rawHTTP{f, "2025-06-18"}
	sid := h.initialize(t, "token-a")
	c := hostileMessage{name: "foreign session", rpc: -32600, id: nil}
	for _, method := range []string{"POST", "GET", "DELETE"} {
		body := ""
		if method == "POST" {
			body = callB
		}
		resp, reply := h.do(t, method, "token-b", sid, body)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403", method, resp.StatusCode)
		}
		checkRefused(t, f, c, "foreign_session", "agent-b", body, reply)
	}
	if got := f.up.received(); len(got) != 0 {
		t.Fatalf("upstream received %q", got)
	}
	if _, body := h.do(t, "POST", "token-a", sid, callA); !strings.Contains(body, "echo: A") {
		t.Fatalf("agent A's call on its session: %s", body)
	}
}

// TestOversizedMessage: a message over the size limit — a stdio line over
// MaxMessage, a body over /mcp's limit — is refused and logged with the
// part that was read; on stdio the rest of the line is dropped and the
// session goes on.
func TestOversizedMessage(t *testing.T) {
	big := func(n int) string {
		return `{"jsonrpc":"2.0","id":31,"method":"tools/call","params":{"name":"up.echo","arguments":{"text":"` + strings.Repeat("A", n) + `"}}}`
	}
	c := hostileMessage{name: "oversized", rpc: -32600}
	t.Run("stdio", func(t *testing.T) {
		f := newFixture(t, testPolicy)
		s := startRawStdio(t, f, policy.Agent{ID: "agent-a", Roles: []string{"bot"}})
		s.initialize(t, "2025-06-18")
		s.send(t, big(mcpproxy.MaxMessage)+"\n")
		checkRefused(t, f, c, "too_large", "agent-a", "", s.next(t))
		s.send(t, callA+"\n")
		if l := s.next(t); !strings.Contains(l, "echo: A") {
			t.Fatalf("a call after the oversized line: %s", l)
		}
		if got := f.up.received(); len(got) != 1 {
			t.Fatalf("upstream received %d calls, want the one after the oversized line", len(got))
		}
	})
	t.Run("http", func(t *testing.T) {
		f := newFixture(t, testPolicy)
		h := rawHTTP{f, "2025-06-18"}
		sid := h.initialize(t, "token-a")
		resp, body := h.do(t, "POST", "token-a", sid, big(1<<20))
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413", resp.StatusCode)
		}
		checkRefused(t, f, c, "too_large", "agent-a", "", body)
		if got := f.up.received(); len(got) != 0 {
			t.Fatalf("upstream received %d calls", len(got))
		}
	})
}

// TestRefusalWithoutLog: when the log cannot take a refusal, the agent is
// told that nothing was done (-32603, and 503 over HTTP), not that the
// message was merely malformed.
func TestRefusalWithoutLog(t *testing.T) {
	f := newFixture(t, testPolicy)
	h := rawHTTP{f, "2025-06-18"}
	sid := h.initialize(t, "token-a")
	s := startRawStdio(t, f, policy.Agent{ID: "agent-a", Roles: []string{"bot"}})
	s.initialize(t, "2025-06-18")
	if err := f.log.Close(); err != nil {
		t.Fatal(err)
	}
	resp, body := h.do(t, "POST", "token-a", sid, "["+callA+"]")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "-32603") || !strings.Contains(body, "nothing was done") {
		t.Errorf("/mcp: %d %s, want 503 and -32603", resp.StatusCode, body)
	}
	s.send(t, "["+callA+"]\n")
	if l := s.next(t); !strings.Contains(l, "-32603") || !strings.Contains(l, "nothing was done") {
		t.Errorf("stdio: %s, want -32603", l)
	}
	if got := f.up.received(); len(got) != 0 {
		t.Fatalf("upstream received %q", got)
	}
}

// TestFramingRefusalKeepsSensitiveArgumentsOut: with an upstream marking
// an argument sensitive, a refused message never brings its value into the
// log: a readable tools/call is logged with the value replaced, and a
// message too broken to take it out of (duplicate members, a batch) is
// not kept at all.
func TestFramingRefusalKeepsSensitiveArgumentsOut(t *testing.T) {
	const secret = "hunter2-S3CRET-value"
	f := newFixtureWith(t, testPolicy, func(u *mcpproxy.Upstream) { u.SensitiveArguments = []string{"text"} })
	h := rawHTTP{f, "2025-06-18"}
	sid := h.initialize(t, "token-a")
	call := `{"jsonrpc":"2.0","id":31,"method":"tools/call","params":{"name":"up.echo","arguments":{"text":"` + secret + `"}}}`
	for _, tt := range []struct {
		name, body string
		kept       bool // whether some of the message is logged
	}{
		{"jsonrpc 1.0", strings.Replace(call, `"2.0"`, `"1.0"`, 1), true},
		{"name twice", strings.Replace(call, `"name":"up.echo"`, `"name":"up.echo","name":"up.echo"`, 1), false},
		{"batch", "[" + call + "]", false},
		{"trailing data", call + call, false},
	} {
		resp, reply := h.do(t, "POST", "token-a", sid, tt.body)
		if resp.StatusCode/100 != 4 {
			t.Fatalf("%s: status %d, want a refusal", tt.name, resp.StatusCode)
		}
		var r rpcReply
		if err := json.Unmarshal([]byte(reply), &r); err != nil || r.Error == nil {
			t.Fatalf("%s: reply %q is not a JSON-RPC error", tt.name, reply)
		}
		var e *audit.Entry
		for _, x := range f.entries(t) {
			if x.Kind == audit.KindDecision && x.RequestID == r.Error.Data.RequestID {
				e = x
			}
		}
		if e == nil {
			t.Fatalf("%s: no refusal in the log", tt.name)
		}
		enc, _ := e.Encode()
		blob, berr := f.log.Blob(e.Raw.Digest)
		if strings.Contains(string(enc), secret) || strings.Contains(string(blob), secret) {
			t.Errorf("%s: the sensitive value is in the log: %s / %s", tt.name, enc, blob)
		}
		if kept := berr == nil && e.Raw.Size > 0; kept != tt.kept {
			t.Errorf("%s: raw kept %v (%d bytes, %v), want %v", tt.name, kept, e.Raw.Size, berr, tt.kept)
		}
		if tt.kept && !strings.Contains(string(blob), `"(sensitive)"`) {
			t.Errorf("%s: logged %s, want the argument replaced", tt.name, blob)
		}
	}
	if got := f.up.received(); len(got) != 0 {
		t.Fatalf("upstream received %q", got)
	}
}
