package mcpproxy

import (
	"crypto/sha256"
	"encoding/json"
	"strconv"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// requestIDs carries the JSON-RPC id of each tools/call from where the
// proxy reads the message (framing: frameStdio, guardHTTP) to its MCP
// server span (startCall), for the conventions' jsonrpc.request.id: the
// SDK (go-sdk v1.8.0) hands a tool handler the call's params and session,
// never its id, and the agent's bytes are not rewritten to carry it
// (refusals log them as sent).
//
// A call is known by its agent, session id (over streamable HTTP; a stdio
// connection is one agent's), tool name and the SHA-256 of its arguments
// exactly as sent (the SDK passes them on undecoded). Two
// identical calls in flight in one session share a key: they take its ids
// in the order they were read, so a span may name its twin's id. The
// table holds at most maxRequestIDs ids (a call the SDK refuses before the
// handler never takes its own): the oldest go first. Only with tracing on.
type requestIDs struct {
	mu    sync.Mutex
	ids   map[callKey][]string
	order []callKey // one per id held, oldest first
}

// maxRequestIDs bounds the ids held for calls not yet handled.
const maxRequestIDs = 1024

type callKey struct {
	agent, session, tool string
	args                 [32]byte
}

// note reads msg, one message that passed the strict reading, and keeps
// its id when it is a tools/call.
func (r *requestIDs) note(agent, session string, msg []byte) {
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		} `json:"params"`
	}
	if json.Unmarshal(msg, &m) != nil || m.Method != "tools/call" || len(m.ID) == 0 {
		return
	}
	id := string(m.ID)
	if s, err := strconv.Unquote(id); err == nil && id[0] == '"' {
		id = s
	}
	k := callKey{agent, session, m.Params.Name, sha256.Sum256(m.Params.Arguments)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids == nil {
		r.ids = map[callKey][]string{}
	}
	if len(r.order) >= maxRequestIDs {
		old := r.order[0]
		r.order = r.order[1:]
		if q := r.ids[old]; len(q) > 1 {
			r.ids[old] = q[1:]
		} else {
			delete(r.ids, old)
		}
	}
	r.ids[k] = append(r.ids[k], id)
	r.order = append(r.order, k)
}

// take returns (and forgets) the id of the tools/call req of agent, ""
// when none was noted.
func (r *requestIDs) take(agent string, req *mcp.CallToolRequest) string {
	if req.Params == nil {
		return ""
	}
	session := ""
	if req.Session != nil && req.Extra != nil { // streamable HTTP: guardHTTP noted the Mcp-Session-Id
		session = req.Session.ID()
	}
	k := callKey{agent, session, req.Params.Name, sha256.Sum256(req.Params.Arguments)}
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.ids[k]
	if len(q) == 0 {
		return ""
	}
	if len(q) == 1 {
		delete(r.ids, k)
	} else {
		r.ids[k] = q[1:]
	}
	for i, o := range r.order {
		if o == k {
			r.order = append(r.order[:i], r.order[i+1:]...)
			break
		}
	}
	return q[0]
}
