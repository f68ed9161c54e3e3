package mcpproxy

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// protocolVersions are the MCP protocol versions rulelock offers to agents,
// newest first. Each is offered only because an end-to-end test drives it
// with a real client that speaks it (cmd/rulelock/mcp_clients_test.go):
// 2026-07-28 with the TypeScript SDK 2.x, the OpenAI Agents SDK and the
// Vercel AI SDK; 2025-11-25 with the TypeScript SDK 1.x and LangChain;
// 2025-06-18 and 2025-03-26 with the TypeScript SDK releases that made them
// their newest. A client asking for anything else (2024-11-05) is answered
// with a version it cannot speak, and disconnects.
var protocolVersions = []string{"2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"}

// resultTypeSince is the first protocol version whose results carry
// resultType ("complete", or "input_required" for a multi round-trip
// request, which rulelock never makes).
const resultTypeSince = "2026-07-28"

// forVersion makes a tools/call result that rulelock built itself valid for
// the protocol version the request was made under. The SDK adds resultType
// to results its own tool handlers return; the proxy answers tools/call in
// middleware, before them, so it adds it here.
func forVersion(req *mcp.CallToolRequest, res mcp.Result) mcp.Result {
	r, ok := res.(*mcp.CallToolResult)
	if !ok || r == nil || requestVersion(req) < resultTypeSince {
		return res
	}
	return completeResult{r}
}

// requestVersion is the protocol version a tools/call was made under: the
// one its _meta names (2026-07-28 and later carry it on every request),
// else the one the session negotiated, else the newest (as the SDK reads it).
func requestVersion(req *mcp.CallToolRequest) string {
	if req.Params != nil {
		if v, ok := req.Params.Meta[mcp.MetaKeyProtocolVersion].(string); ok && v != "" {
			return v
		}
	}
	if req.Session != nil {
		if ip := req.Session.InitializeParams(); ip != nil && ip.ProtocolVersion != "" {
			return ip.ProtocolVersion
		}
	}
	return protocolVersions[0]
}

// completeResult is a final tools/call result under a protocol version that
// requires resultType. (The SDK keeps the field unexported.)
type completeResult struct{ *mcp.CallToolResult }

func (r completeResult) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(r.CallToolResult)
	if err != nil {
		return nil, err
	}
	if len(b) < 2 || b[0] != '{' {
		return nil, errors.New("tools/call result is not a JSON object")
	}
	var out bytes.Buffer
	out.Grow(len(b) + 24)
	out.WriteString(`{"resultType":"complete"`)
	if rest := b[1:]; !bytes.Equal(rest, []byte("}")) {
		out.WriteByte(',')
		out.Write(rest)
	} else {
		out.WriteByte('}')
	}
	return out.Bytes(), nil
}
