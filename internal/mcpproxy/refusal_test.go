package mcpproxy_test

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/audit"
)

// TestRefusalRecordsRawArguments: a tools/call that cannot be read strictly
// (arguments not UTF-8, with a duplicate key, with a lossy number) is
// refused before the SDK sees it, and one the pinned schema refuses (an
// extra argument) is refused by the proxy. Each refusal entry holds the
// SHA-256 and size of what the agent sent exactly as it sent it — the whole
// message when it could not be read, the arguments when the schema refused
// them — with the bytes in the blob store.
func TestRefusalRecordsRawArguments(t *testing.T) {
	f := newFixture(t, testPolicy)
	post := func(session, body string) (*http.Response, string) {
		req, _ := http.NewRequest("POST", f.mcp.URL, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer token-a")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
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
	resp, _ := post("", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	sid := resp.Header.Get("Mcp-Session-Id")
	if sid == "" {
		t.Fatalf("initialize: no session id (status %d)", resp.StatusCode)
	}
	post(sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)

	cases := []struct {
		args, code, rpc string
		whole           bool // the refusal records the whole message, not just the arguments
	}{
		{"{\"text\": \"caf\xe9\"}", "bad_message", "-32700", true},                // not UTF-8 (Latin-1)
		{`{"text":"a", "text":"b"}`, "bad_message", "-32700", true},               // duplicate key
		{`{"text": {"deep": [1, 2, 1e400]}}`, "bad_message", "-32700", true},      // a lossy number
		{"{ \"text\" :\t\"x\" , \"n\": 0.10 }", "bad_arguments", "-32602", false}, // well-formed, but an extra argument
	}
	for i, c := range cases {
		msg := `{"jsonrpc":"2.0","id":` + string(rune('2'+i)) + `,"method":"tools/call","params":{"name":"up.echo","arguments":` + c.args + `}}`
		_, body := post(sid, msg)
		if !strings.Contains(body, c.rpc) || !strings.Contains(body, `"id":`+string(rune('2'+i))) {
			t.Errorf("%q: %s, want %s for id %c", c.args, body, c.rpc, '2'+i)
		}
		var e *audit.Entry
		for _, x := range f.entries(t) {
			if x.Kind == audit.KindDecision && strings.HasPrefix(x.Message, c.code+": ") && x.Agent == "agent-a" {
				e = x
			}
		}
		if e == nil {
			t.Fatalf("%q: no %s refusal of agent-a logged", c.args, c.code)
		}
		sent := c.args
		if c.whole {
			sent = msg
		}
		want := audit.Digest(sha256.Sum256([]byte(sent)))
		if e.Raw.Digest != want || e.Raw.Size != int64(len(sent)) {
			t.Errorf("%q: raw %v (%d bytes), want %v (%d bytes)", sent, e.Raw.Digest, e.Raw.Size, want, len(sent))
		}
		if got, err := f.log.Blob(e.Raw.Digest); err != nil || !bytes.Equal(got, []byte(sent)) {
			t.Errorf("%q: blob %q, %v; want the bytes sent", sent, got, err)
		}
		if !c.whole && !strings.Contains(e.Message, `tools/call "up.echo"`) {
			t.Errorf("%q: message %q does not name the tool", sent, e.Message)
		}
	}
	if got := f.up.received(); len(got) != 0 {
		t.Fatalf("upstream received %q", got)
	}
}

// TestSessionOnAnotherReplica: MCP sessions live in the replica that opened
// them; a request naming one on another replica (behind a load balancer
// that is not sticky) is answered 404 with a JSON-RPC error that says so,
// and logged as that agent's replica_session refusal.
func TestSessionOnAnotherReplica(t *testing.T) {
	one, two := newFixture(t, testPolicy), newFixture(t, testPolicy)
	post := func(url, session, body string) (*http.Response, string) {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer token-a")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
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
	resp, _ := post(one.mcp.URL, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	sid := resp.Header.Get("Mcp-Session-Id")
	if sid == "" {
		t.Fatalf("initialize: no session id (status %d)", resp.StatusCode)
	}
	if resp, body := post(one.mcp.URL, sid, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("tools/list on the replica that opened the session: %d %s", resp.StatusCode, body)
	}
	resp, body := post(two.mcp.URL, sid, `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "-32600") || !strings.Contains(body, "sticky") {
		t.Fatalf("the session on another replica: %d %s; want 404 with a JSON-RPC error that says sessions must be sticky", resp.StatusCode, body)
	}
	logged := false
	for _, e := range two.entries(t) {
		logged = logged || e.Kind == audit.KindDecision && e.Agent == "agent-a" && strings.HasPrefix(e.Message, "replica_session: ")
	}
	if !logged {
		t.Error("no replica_session refusal of agent-a in the second replica's log")
	}
}
