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

// TestRefusalRecordsRawArguments: a tools/call whose arguments cannot be
// decoded (not UTF-8, a duplicate key, malformed inside) is refused, and
// its refusal entry holds the SHA-256 and size of the arguments exactly as
// the agent sent them, with the bytes in the blob store and the tool named.
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

	sent := []string{
		"{\"text\": \"caf\xe9\"}",             // not UTF-8 (Latin-1)
		`{"text":"a", "text":"b"}`,            // duplicate key
		`{"text": {"deep": [1, 2, 1e400]}}`,   // a lossy number
		"{ \"text\" :\t\"x\" , \"n\": 0.10 }", // well-formed, but an extra argument
	}
	for i, args := range sent {
		_, body := post(sid, `{"jsonrpc":"2.0","id":`+string(rune('2'+i))+`,"method":"tools/call","params":{"name":"up.echo","arguments":`+args+`}}`)
		if !strings.Contains(body, "-32602") {
			t.Errorf("%q: %s, want invalid params", args, body)
		}
	}
	var refusals []*audit.Entry
	for _, e := range f.entries(t) {
		if e.Kind == audit.KindDecision && strings.HasPrefix(e.Message, "bad_arguments: ") {
			refusals = append(refusals, e)
		}
	}
	if len(refusals) != len(sent) {
		t.Fatalf("%d bad_arguments refusals logged, want %d", len(refusals), len(sent))
	}
	for i, e := range refusals {
		want := audit.Digest(sha256.Sum256([]byte(sent[i])))
		if e.Raw.Digest != want || e.Raw.Size != int64(len(sent[i])) {
			t.Errorf("%q: raw %v (%d bytes), want %v (%d bytes)", sent[i], e.Raw.Digest, e.Raw.Size, want, len(sent[i]))
		}
		if got, err := f.log.Blob(e.Raw.Digest); err != nil || !bytes.Equal(got, []byte(sent[i])) {
			t.Errorf("%q: blob %q, %v; want the bytes sent", sent[i], got, err)
		}
		if !strings.Contains(e.Message, `tools/call "up.echo"`) {
			t.Errorf("%q: message %q does not name the tool", sent[i], e.Message)
		}
	}
	if got := f.up.received(); len(got) != 0 {
		t.Fatalf("upstream received %q", got)
	}
}
