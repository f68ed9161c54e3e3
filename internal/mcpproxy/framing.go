package mcpproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// Framing: every message an agent sends, on stdio or on /mcp, is read once
// by the strict decoder before the SDK sees it. A message is exactly one
// JSON-RPC 2.0 object:
//
//   - one strict JSON value (internal/strictjson: valid UTF-8, no duplicate
//     members and no members that differ only in case anywhere in the
//     message, numbers that float64 holds exactly, nothing after the value);
//   - an object, never an array: batches are refused, not taken apart;
//   - "jsonrpc": "2.0"; an id, when present, a string or an integer; a
//     method, when present, a string with params, when present, an object;
//     a response (no method) with an id and exactly one of result and error;
//   - on stdio, one message per line ended by "\n" alone: a "\r" anywhere in
//     a line refuses it (JSON does not allow one inside a string either),
//     so no reader can split a line into two messages;
//   - on /mcp, one message per request body.
//
// A message that passes goes to the SDK byte for byte: the strict reading
// leaves a parser nothing to read differently (no duplicate, no case
// variant, no lossy number), and the arguments the proxy acts on are then
// decoded strictly again and re-serialised for the upstream. A message that
// fails is answered with a JSON-RPC error and recorded as a refusal of the
// authenticated agent, with the bytes it sent.

// Refusal codes: the reason of the deny decision a refusal is logged as.
const (
	refusedBatch    = "batch"           // a JSON array: a JSON-RPC batch
	refusedFraming  = "bad_framing"     // stdio: "\r" in a line, input ending inside a line
	refusedMessage  = "bad_message"     // not one strict JSON value
	refusedRequest  = "bad_request"     // JSON, but not a JSON-RPC 2.0 message
	refusedParams   = "bad_params"      // params that are not an object
	refusedSession  = "foreign_session" // an Mcp-Session-Id not issued to this agent
	refusedReplica  = "replica_session" // an Mcp-Session-Id another replica (or an earlier process) issued
	refusedTooLarge = "too_large"       // a body over the size limit
)

// MaxMessage caps one message on stdio, like the body of a request to /mcp.
const MaxMessage = 4 << 20

// messageDepth caps the nesting of a message: an argument may nest as deep
// as the strict decoder's default allows, under the envelope and params.
const messageDepth = strictjson.DefaultMaxDepth + 2

// refusal is why a message was refused and how the agent is told.
type refusal struct {
	code string
	rpc  int64 // the JSON-RPC error code
	msg  string
	id   any // the message's id when it has a valid one
}

// checkMessage reads one inbound message strictly and returns why it is
// refused, or nil.
func checkMessage(b []byte) *refusal {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) > 0 && t[0] == '[' {
		return &refusal{code: refusedBatch, rpc: jsonrpc.CodeInvalidRequest, msg: "JSON-RPC batches are not supported: send one message at a time"}
	}
	v, err := strictjson.Decode(b, strictjson.Limits{MaxBytes: len(b) + 1, MaxDepth: messageDepth})
	if err != nil {
		return &refusal{code: refusedMessage, rpc: jsonrpc.CodeParseError, msg: "not one strict JSON value: " + err.Error(), id: replyID(b)}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return &refusal{code: refusedRequest, rpc: jsonrpc.CodeInvalidRequest, msg: "a JSON-RPC message is an object"}
	}
	bad := func(format string, args ...any) *refusal {
		return &refusal{code: refusedRequest, rpc: jsonrpc.CodeInvalidRequest, msg: fmt.Sprintf(format, args...)}
	}
	if m["jsonrpc"] != "2.0" {
		return bad(`"jsonrpc" must be "2.0"`)
	}
	id, hasID := m["id"]
	if hasID && !validID(id) {
		return bad(`"id" must be a string or an integer`)
	}
	if !hasID {
		id = nil
	}
	_, hasResult := m["result"]
	_, hasError := m["error"]
	method, hasMethod := m["method"]
	if !hasMethod {
		if !hasID || hasResult == hasError {
			return bad("a response has an id and exactly one of result and error; a request has a method")
		}
		return nil
	}
	if _, ok := method.(string); !ok {
		return &refusal{code: refusedRequest, rpc: jsonrpc.CodeInvalidRequest, msg: `"method" must be a string`, id: id}
	}
	if hasResult || hasError {
		return &refusal{code: refusedRequest, rpc: jsonrpc.CodeInvalidRequest, msg: "a request has no result or error", id: id}
	}
	if params, ok := m["params"]; ok {
		if _, ok := params.(map[string]any); !ok {
			return &refusal{code: refusedParams, rpc: jsonrpc.CodeInvalidParams, msg: `"params" must be an object`, id: id}
		}
	}
	return nil
}

// validID reports whether id is an MCP request id: a string or an integer
// (a float64 from the strict decoder, which holds it exactly).
func validID(id any) bool {
	switch id := id.(type) {
	case string:
		return true
	case float64:
		return id == math.Trunc(id) && math.Abs(id) <= 1<<53
	}
	return false
}

// replyID is where the error for a message that is not strict JSON goes:
// its top-level id as a lenient parser reads it, when it reads one, so a
// client waiting on that id hears of the refusal now rather than at its
// timeout; else null, as JSON-RPC says. The id only addresses the error:
// nothing else of a refused message is ever acted on.
func replyID(b []byte) any {
	var m struct {
		ID any `json:"id"`
	}
	if json.Unmarshal(b, &m) != nil || !validID(m.ID) {
		return nil
	}
	return m.ID
}

// refuse records a refused message as a refusal of the agent, with raw, the
// bytes it sent, and returns the JSON-RPC error that answers it; logged is
// false when the refusal could not be recorded (the reply then says that
// nothing was done).
func (p *Proxy) refuse(ctx context.Context, agent policy.Agent, r *refusal, raw []byte) (reply []byte, logged bool) {
	if p.gw == nil {
		return errorReply(r.id, jsonrpc.CodeInternalError, "rulelock is not ready: nothing was done", ""), false
	}
	res, err := p.gw.Refuse(ctx, agent, r.code, "MCP message refused: "+r.msg, p.loggableMessage(raw))
	if err != nil {
		return errorReply(r.id, jsonrpc.CodeInternalError, "the audit log is unavailable: nothing was done", ""), false
	}
	return errorReply(r.id, r.rpc, r.code+": "+r.msg, res.RequestID), true
}

// loggableMessage is what the refusal of a message logs of it: the bytes
// the agent sent, unless an upstream marks arguments sensitive. Then a
// tools/call message to that upstream's tool is logged with those
// arguments' values replaced (loggableArguments) and re-serialised, and a
// message that cannot be read well enough to take them out — unreadable,
// a batch, duplicate members — is not logged at all (nil: the refusal
// entry then records that nothing of it was kept).
func (p *Proxy) loggableMessage(raw []byte) []byte {
	if !p.anySensitive() {
		return raw
	}
	v, err := strictjson.Decode(raw, strictjson.Limits{MaxBytes: len(raw) + 1})
	if err != nil {
		return nil
	}
	msg, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	if params, ok := msg["params"].(map[string]any); ok && msg["method"] == "tools/call" {
		name, _ := params["name"].(string)
		if args, ok := params["arguments"]; ok {
			b, err := strictjson.Canonical(args)
			if err != nil {
				return nil
			}
			la := p.loggableArguments(name, b)
			if la == nil {
				return nil
			}
			if params["arguments"], err = strictjson.Decode(la, strictjson.Limits{MaxBytes: len(la) + 1}); err != nil {
				return nil
			}
		}
	}
	b, err := strictjson.Canonical(msg)
	if err != nil {
		return nil
	}
	return b
}

// anySensitive reports whether an upstream marks arguments sensitive.
func (p *Proxy) anySensitive() bool {
	for _, u := range p.ups {
		if len(u.cfg.SensitiveArguments) > 0 {
			return true
		}
	}
	return false
}

// errorReply is a JSON-RPC error response; its data names the refusal's
// request id in the log when there is one.
func errorReply(id any, code int64, msg, requestID string) []byte {
	e := map[string]any{"code": code, "message": msg}
	if requestID != "" {
		e["data"] = map[string]any{"request_id": requestID}
	}
	b, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "error": e})
	if err != nil {
		panic(err) // strings, numbers and maps of them always marshal
	}
	return b
}
