package mcpproxy

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestRequestIDs: identical calls take their ids in the order they were
// read; other messages are not noted; at most maxRequestIDs ids are held,
// the oldest forgotten first.
func TestRequestIDs(t *testing.T) {
	var r requestIDs
	call := func(id, args string) []byte {
		return []byte(`{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"up.echo","arguments":` + args + `}}`)
	}
	req := func(args string) *mcp.CallToolRequest {
		return &mcp.CallToolRequest{Params: &mcp.CallToolParamsRaw{Name: "up.echo", Arguments: json.RawMessage(args)}}
	}
	r.note("a", "", call(`"x"`, `{"t": 1}`))
	r.note("a", "", call(`2`, `{"t": 1}`))
	r.note("a", "", []byte(`{"jsonrpc":"2.0","id":3,"method":"tools/list"}`))
	r.note("a", "", []byte(`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"up.echo","arguments":{"t": 1}}}`))
	for _, want := range []string{"x", "2", ""} {
		if got := r.take("a", req(`{"t": 1}`)); got != want {
			t.Errorf("take: %q, want %q", got, want)
		}
	}
	if got := r.take("b", req(`{"t": 1}`)); got != "" {
		t.Errorf("another agent's call took %q", got)
	}
	for i := range maxRequestIDs + 10 {
		r.note("a", "", call(fmt.Sprint(i), fmt.Sprintf(`{"n": %d}`, i)))
	}
	if len(r.order) != maxRequestIDs || len(r.ids) != maxRequestIDs {
		t.Errorf("holds %d ids under %d keys, want %d", len(r.order), len(r.ids), maxRequestIDs)
	}
	if got := r.take("a", req(`{"n": 0}`)); got != "" {
		t.Errorf("the oldest id is still held: %q", got)
	}
	if got := r.take("a", req(`{"n": 1033}`)); got != "1033" {
		t.Errorf("the newest id: %q, want 1033", got)
	}
}
