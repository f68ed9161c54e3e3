package mcpproxy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// agentServer is the MCP server one agent talks to.
type agentServer struct {
	agent  policy.Agent
	server *mcp.Server

	mu     sync.Mutex
	listed map[string]string // qualified name → hash, as registered with the SDK server
}

// serverFor returns the agent's MCP server, creating it on first use.
func (p *Proxy) serverFor(agent policy.Agent) *mcp.Server {
	p.mu.Lock()
	as := p.servers[agent.ID]
	if as == nil {
		as = &agentServer{agent: agent, listed: map[string]string{}}
		as.server = mcp.NewServer(&mcp.Implementation{Name: "rulelock", Version: gateway.EngineVersion}, &mcp.ServerOptions{
			Capabilities:              &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{ListChanged: true}},
			Logger:                    p.logger,
			GetSessionID:              func() string { return sessionPrefix(agent.ID) + p.replica + "." + rand.Text() },
			SupportedProtocolVersions: protocolVersions,
		})
		as.server.AddReceivingMiddleware(p.middleware(as))
		p.servers[agent.ID] = as
	}
	p.mu.Unlock()
	p.refresh(as)
	return as.server
}

// refresh brings the agent's registered tools in line with what it may
// see; the SDK notifies its sessions (tools/list_changed) of changes.
func (p *Proxy) refresh(as *agentServer) {
	vis := p.visible(as.agent)
	as.mu.Lock()
	defer as.mu.Unlock()
	var gone []string
	for q, h := range as.listed {
		if t := vis[q]; t == nil || t.Hash != h {
			gone = append(gone, q)
			delete(as.listed, q)
		}
	}
	if len(gone) > 0 {
		for i, q := range gone {
			gone[i] = p.exposedName(q)
		}
		as.server.RemoveTools(gone...)
	}
	for _, q := range sortedKeys(vis) {
		t := vis[q]
		if _, ok := as.listed[q]; ok {
			continue
		}
		// Calls never reach this handler: the middleware answers them.
		as.server.AddTool(t.exposed(p.exposedName(q)), func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return nil, errors.New("unreachable")
		})
		as.listed[q] = t.Hash
	}
}

// PolicyChanged tells every connected agent of the tools the active policy
// may now allow (tools/list_changed where the list changed). Call it after
// a policy activation.
func (p *Proxy) PolicyChanged() { p.refreshServers() }

// refreshServers refreshes every agent's server (after a resync or a
// policy activation).
func (p *Proxy) refreshServers() {
	p.mu.Lock()
	all := make([]*agentServer, 0, len(p.servers))
	for _, as := range p.servers {
		all = append(all, as)
	}
	p.mu.Unlock()
	for _, as := range all {
		p.refresh(as)
	}
}

// middleware answers tools/list (after a refresh, so a new policy or a
// quarantine shows at once) and tools/call; the rest goes to the SDK.
func (p *Proxy) middleware(as *agentServer) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			switch method {
			case "tools/list":
				p.refresh(as)
			case "tools/call":
				cr, ok := req.(*mcp.CallToolRequest)
				if !ok {
					return nil, invalidParams("malformed tools/call")
				}
				ctx, sp := p.startCall(ctx, as.agent.ID, cr)
				res, err := p.call(ctx, as.agent, cr)
				endCall(sp, true, res, err)
				if err != nil {
					return nil, err
				}
				return forVersion(cr, res), nil
			}
			return next(ctx, method, req)
		}
	}
}

func invalidParams(format string, args ...any) error {
	return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf(format, args...)}
}

// call mediates one tools/call.
func (p *Proxy) call(ctx context.Context, agent policy.Agent, req *mcp.CallToolRequest) (mcp.Result, error) {
	if p.gw == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "rulelock is not ready: nothing was done"}
	}
	params := req.Params
	// A refusal records the call's arguments exactly as the agent sent them
	// (the SDK hands them over undecoded: their SHA-256 goes into the
	// entry), and names the tool in its message.
	var raw []byte
	var name string
	if params != nil {
		raw, name = p.loggableArguments(params.Name, params.Arguments), params.Name
	}
	logged := func(msg string) string { return fmt.Sprintf("tools/call %q: %s", name, msg) }
	refuse := func(code, msg string) error {
		if _, err := p.gw.Refuse(ctx, agent, code, logged(msg), raw); err != nil {
			return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the audit log is unavailable: nothing was done"}
		}
		return invalidParams("%s", msg)
	}
	if params == nil || params.Name == "" {
		return nil, refuse("bad_request", "tools/call needs a tool name")
	}
	t, q := p.lookupExposed(params.Name)
	if t == nil {
		return nil, refuse("unknown_tool", fmt.Sprintf("unknown tool %q", params.Name))
	}
	// A session's first call lists the tool's upstream again (recheck.go).
	t, q, rerr := p.recheckFirst(req.Session, t, q)
	if rerr != nil {
		if _, err := p.gw.Refuse(ctx, agent, "tool_recheck_failed", logged(rerr.Error()), raw); err != nil {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the audit log is unavailable: nothing was done"}
		}
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: rerr.Error()}
	}
	if q != nil {
		res, err := p.gw.Refuse(ctx, agent, q.code, logged(q.why), raw)
		if err != nil {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the audit log is unavailable: nothing was done"}
		}
		return denial(res, q.code+": "+q.why), nil
	}
	args, err := decodeArguments(params.Arguments)
	if err != nil {
		return nil, refuse("bad_arguments", err.Error())
	}
	if err := t.checkArguments(args); err != nil {
		return nil, refuse("bad_arguments", err.Error())
	}
	if err := t.Upstream.paths.resolvePaths(args, t.Upstream.cfg.PathArguments); err != nil {
		return nil, refuse("bad_arguments", err.Error())
	}
	args["type"] = t.Qualified
	action, err := policy.NewAction(args)
	if err != nil {
		return nil, refuse("bad_arguments", err.Error())
	}
	greq := &gateway.Request{Agent: agent, Action: action, Session: metaString(params.Meta, MetaSession),
		Instruction: metaString(params.Meta, MetaInstruction), Reasoning: metaString(params.Meta, MetaReasoning), Tool: t.Ref()}
	if greq.Session == "" && req.Session != nil {
		greq.Session = req.Session.ID()
	}
	// Progress of the forwarded call reaches the agent under its own token.
	var tok *progressTarget
	if pt := params.GetProgressToken(); pt != nil && req.Session != nil {
		tok = &progressTarget{session: req.Session, token: pt}
		ctx = withProgress(ctx, tok)
	}
	res, err := p.gw.Submit(ctx, greq, true)
	if code, msg := gateway.Refusal(err); code != "" {
		// Logged like the HTTP API's no_policy and checkpoint_overdue
		// refusals; the agent is told the server cannot act, not that its
		// call was malformed.
		if _, err := p.gw.Refuse(ctx, agent, code, logged(msg), raw); err != nil {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the audit log is unavailable: nothing was done"}
		}
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "rulelock: " + msg}
	}
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "rulelock could not decide or record the call: nothing was done (" + err.Error() + ")"}
	}
	if res.Decision.Decision == policy.RequireApproval {
		res, err = p.awaitApproval(ctx, agent, res, tok)
		if err != nil {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()}
		}
	}
	return p.reply(res), nil
}

// awaitApproval waits up to ApprovalWait for a parked call to become final,
// telling the agent of the wait when it asked for progress.
func (p *Proxy) awaitApproval(ctx context.Context, agent policy.Agent, res *gateway.Result, tok *progressTarget) (*gateway.Result, error) {
	wctx, cancel := context.WithTimeout(ctx, p.cfg.ApprovalWait)
	defer cancel()
	if tok != nil {
		msg := "awaiting approval: request " + res.RequestID
		if res.Decision.Approval != nil {
			for _, r := range res.Decision.Approval.Requirements {
				if r.Message != "" {
					msg += ": " + r.Message
				}
			}
		}
		tok.notify(ctx, 0, msg)
		go func() {
			tick := time.NewTicker(5 * time.Second)
			defer tick.Stop()
			n := 0.0
			for {
				select {
				case <-wctx.Done():
					return
				case <-tick.C:
					n++
					tok.notify(ctx, n, msg)
				}
			}
		}()
	}
	final, err := p.gw.Wait(wctx, agent.ID, res.RequestID)
	if err != nil {
		return nil, err
	}
	return final, nil
}

// reply turns the gateway's result into the agent's tool result.
func (p *Proxy) reply(res *gateway.Result) *mcp.CallToolResult {
	switch {
	case res.Approval != nil && (res.Approval.State == approval.Rejected || res.Approval.State == approval.Expired):
		// Denied by its approvers or its time limit, not by the rules
		// that parked it.
		return denial(res, fmt.Sprintf("request %s was %s", res.RequestID, res.Approval.State))
	case res.Decision.Decision == policy.Deny:
		return denial(res, denialText(res))
	case res.Decision.Decision == policy.RequireApproval:
		st := "pending"
		if res.Approval != nil && res.Approval.State != "" {
			st = string(res.Approval.State)
		}
		if st == "pending" {
			return withDecision(&mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{
				Text: fmt.Sprintf("awaiting human approval: request %s is pending; call again later or ask the approvers (%s)", res.RequestID, denialText(res))}}}, res)
		}
		return denial(res, fmt.Sprintf("request %s was %s", res.RequestID, st))
	case res.Outcome == nil:
		return withDecision(&mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{
			Text: "allowed, but rulelock has no outcome for request " + res.RequestID}}}, res)
	}
	if full := p.results.take(res.RequestID); full != nil {
		full.Content = append(slices.Clip(full.Content), violations(res)...)
		return withDecision(full, res)
	}
	msg := res.Outcome.Error
	if msg == "" {
		msg = "the call's result is no longer held (status " + string(res.Outcome.Status) + ")"
	}
	content := append([]mcp.Content{&mcp.TextContent{Text: msg}}, violations(res)...)
	return withDecision(&mcp.CallToolResult{IsError: true, Content: content}, res)
}

// violations tells the agent, as text after the tool's own content, of the
// enforced postconditions its call's result violates. It does not make the
// result an error: the call was executed, and an agent that read isError as
// "not done" might do it again.
func violations(res *gateway.Result) []mcp.Content {
	var parts []string
	for _, v := range res.Postconditions {
		if !v.Holds && !v.Shadow {
			parts = append(parts, fmt.Sprintf("rule %q: %s", v.Rule, v.Message))
		}
	}
	if len(parts) == 0 {
		return nil
	}
	return []mcp.Content{&mcp.TextContent{Text: "rulelock: the call was executed, but its result violates the policy: " + strings.Join(parts, "; ")}}
}

// denial is the agent's view of a denied call: a tool result with isError,
// a text naming the rule, and the decision under _meta. Never
// structuredContent: a client validates it against the tool's output schema.
func denial(res *gateway.Result, text string) *mcp.CallToolResult {
	return withDecision(&mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "rulelock denied the call: " + text}}}, res)
}

func denialText(res *gateway.Result) string {
	var parts []string
	for _, r := range res.Decision.Rules {
		if r.Shadow || r.Outcome == policy.OutcomeAllow {
			continue
		}
		parts = append(parts, fmt.Sprintf("rule %q: %s", r.Name, r.Message))
	}
	for _, e := range res.Decision.Errors {
		parts = append(parts, e.Code+": "+e.Message)
	}
	switch {
	case len(parts) > 0:
	case res.Decision.Reason == policy.ReasonDefaultDeny:
		parts = append(parts, "no rule allows it (default_deny)")
	default:
		parts = append(parts, res.Decision.Reason)
	}
	return strings.Join(parts, "; ")
}

func withDecision(r *mcp.CallToolResult, res *gateway.Result) *mcp.CallToolResult {
	meta := map[string]any{"request_id": res.RequestID, "decision": res.Decision, "receipt": res.Receipt}
	if res.OutcomeReceipt != nil {
		meta["outcome_receipt"] = res.OutcomeReceipt
	}
	if res.Outcome != nil {
		meta["outcome_status"] = res.Outcome.Status
	}
	if len(res.Postconditions) > 0 {
		meta["postconditions"] = res.Postconditions
	}
	r.Meta = mcp.Meta{MetaDecision: meta}
	return r
}

// decodeArguments reads a call's arguments strictly: a JSON object (absent
// means {}), no duplicate or case-variant duplicate keys.
func decodeArguments(raw json.RawMessage) (map[string]any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return map[string]any{}, nil
	}
	v, err := strictjson.Decode(raw, strictjson.Limits{})
	if err != nil {
		return nil, fmt.Errorf("arguments: %v", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("arguments must be a JSON object")
	}
	if _, ok := m["type"]; ok {
		return nil, errors.New(`argument "type" is reserved by rulelock`)
	}
	return m, nil
}

func metaString(m mcp.Meta, key string) string {
	s, _ := m[key].(string)
	return s
}

// execute forwards an allowed call to its upstream. It checks again what
// the call path checked, so an action submitted another way (the HTTP API)
// cannot reach an upstream with arguments the proxy would not send.
func (p *Proxy) execute(ctx context.Context, x gateway.Execution) gateway.Outcome {
	t, q := p.lookup(x.Action.Type)
	switch {
	case t == nil:
		return gateway.Outcome{Status: gateway.StatusError, Error: errUpstreamGone.Error()}
	case q != nil:
		return gateway.Outcome{Status: gateway.StatusError, Error: q.code + ": " + q.why}
	}
	args := make(map[string]any, len(x.Action.Fields))
	for k, v := range x.Action.Fields {
		if k != "type" {
			args[k] = v
		}
	}
	if err := t.checkArguments(args); err != nil {
		return gateway.Outcome{Status: gateway.StatusError, Error: err.Error()}
	}
	guard, err := t.Upstream.guardPaths(t.Def, args)
	if err != nil {
		return gateway.Outcome{Status: gateway.StatusError, Error: err.Error()}
	}
	if guard != nil {
		defer guard.close()
	}
	ctx, cancel := context.WithTimeout(ctx, t.Upstream.cfg.Timeout)
	defer cancel()
	params := &mcp.CallToolParams{Name: t.Def.Name, Arguments: args}
	if tok := progressFrom(ctx); tok != nil {
		pt := p.progress.register(tok)
		params.Meta = mcp.Meta{"progressToken": pt}
		// The SDK may deliver the upstream's last notifications after the
		// result: keep routing them for a moment.
		defer time.AfterFunc(2*time.Second, func() { p.progress.unregister(pt) })
	}
	fctx, sp := p.startForward(ctx, t.Upstream, t.Def.Name, params)
	res, err := t.Upstream.session.CallTool(fctx, params)
	endCall(sp, false, res, err)
	if guard != nil {
		if changed, why := guard.changed(); changed {
			// The upstream may have opened something else: what it
			// returned never reaches the agent.
			return gateway.Outcome{Status: gateway.StatusUnknown,
				Error: fmt.Sprintf("%v while the upstream ran the call (%s): its result is withheld, and what it touched is unknown", errPathChanged, why)}
		}
	}
	if err != nil {
		// The request was written (or may have been): whether it happened is
		// unknown unless the upstream answered with a protocol error.
		var je *jsonrpc.Error
		if errors.As(err, &je) {
			return gateway.Outcome{Status: gateway.StatusError, Error: err.Error()}
		}
		return gateway.Outcome{Status: gateway.StatusUnknown, Error: err.Error()}
	}
	// Re-wrap: the upstream's content and structured content, none of its
	// protocol metadata.
	out := &mcp.CallToolResult{Content: res.Content, StructuredContent: res.StructuredContent, IsError: res.IsError}
	body, err := json.Marshal(out)
	if err != nil {
		return gateway.Outcome{Status: gateway.StatusError, Error: "upstream result: " + err.Error()}
	}
	p.results.put(x.RequestID, out)
	sum := sha256.Sum256(body)
	o := gateway.Outcome{Status: gateway.StatusOK, BodySHA256: hex.EncodeToString(sum[:])}
	if len(body) <= maxLoggedResult {
		o.Body = body
	}
	if res.IsError {
		o.Status, o.Error = gateway.StatusError, "the tool reported an error"
	}
	return o
}

// maxLoggedResult caps the tool result kept in the outcome entry; the
// digest always covers all of it.
const maxLoggedResult = 64 << 10

// resultStash holds full tool results between the executor and the reply.
type resultStash struct {
	mu sync.Mutex
	m  map[string]stashed
}

type stashed struct {
	r  *mcp.CallToolResult
	at time.Time
}

func newResultStash() *resultStash { return &resultStash{m: map[string]stashed{}} }

// put keeps r; results nobody took within 10 minutes (their caller went
// away) are dropped.
func (s *resultStash) put(id string, r *mcp.CallToolResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for k, v := range s.m {
		if now.Sub(v.at) > 10*time.Minute {
			delete(s.m, k)
		}
	}
	s.m[id] = stashed{r, now}
}

func (s *resultStash) take(id string) *mcp.CallToolResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[id]
	if !ok {
		return nil
	}
	delete(s.m, id)
	return v.r
}

// Progress: the agent's token is replaced by one of rulelock's for the
// upstream call, and the upstream's notifications are routed back.
type progressTarget struct {
	session *mcp.ServerSession
	token   any
}

func (t *progressTarget) notify(ctx context.Context, n float64, msg string) {
	_ = t.session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: t.token, Progress: n, Message: msg})
}

type progressKey struct{}

func withProgress(ctx context.Context, t *progressTarget) context.Context {
	return context.WithValue(ctx, progressKey{}, t)
}

func progressFrom(ctx context.Context) *progressTarget {
	t, _ := ctx.Value(progressKey{}).(*progressTarget)
	return t
}

type progressRouter struct {
	mu sync.Mutex
	m  map[string]*progressTarget
}

func newProgressRouter() *progressRouter { return &progressRouter{m: map[string]*progressTarget{}} }

func (r *progressRouter) register(t *progressTarget) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	tok := "rulelock-" + hex.EncodeToString(b[:])
	r.mu.Lock()
	r.m[tok] = t
	r.mu.Unlock()
	return tok
}

func (r *progressRouter) unregister(tok string) {
	r.mu.Lock()
	delete(r.m, tok)
	r.mu.Unlock()
}

func (r *progressRouter) forward(ctx context.Context, p *mcp.ProgressNotificationParams) {
	tok, _ := p.ProgressToken.(string)
	r.mu.Lock()
	t := r.m[tok]
	r.mu.Unlock()
	if t == nil {
		return
	}
	_ = t.session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: t.token, Progress: p.Progress, Total: p.Total, Message: p.Message})
}
