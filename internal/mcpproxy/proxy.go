// Package mcpproxy puts rulelock between an MCP client (the agent) and MCP
// servers (its tools). Every tools/call becomes an action — its type the
// server-qualified tool name, its fields the canonical arguments — and goes
// through the gateway's pipeline exactly like an action over the HTTP API:
// a durable decision, then deny, park for approval, or forward, then a
// durable outcome. Upstream tools are pinned by the hash of their
// definition; a tool whose definition changes is quarantined until a
// signed policy bundle accepts the new hash.
//
// The proxy is built on the official Go SDK. Each agent gets its own MCP
// server (so tools/list shows only what the policy may allow it); the
// proxy intercepts tools/list and tools/call in receiving middleware.
package mcpproxy

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.opentelemetry.io/otel/trace"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// PinsDocument is the data document of a policy bundle that pins tool
// definitions: {"fs.read_text_file": "sha256:…"}. A tool it names is
// accepted only with exactly that hash, whatever else pins it.
const PinsDocument = "mcp_tools"

// Meta keys: what the agent may put in a tools/call's _meta, and where the
// machine-readable decision goes in the result's _meta.
const (
	MetaInstruction = "io.rulelock/instruction"
	MetaReasoning   = "io.rulelock/reasoning"
	MetaSession     = "io.rulelock/session"
	MetaDecision    = "io.rulelock/decision"
)

// Log messages of the proxy's note entries: "<note> <tool> <hash> …".
const (
	notePinned      = "mcp_tool_pinned"      // first seen, trusted on first use (FirstSeenExpose)
	noteQuarantined = "mcp_tool_quarantined" // … <code>: not pinned, changed, refused
	noteRefused     = "mcp_tool_refused"     // … : the vetting findings that refuse it
	noteSanitised   = "mcp_tool_sanitised"   // … : what was removed from what the agent sees
	noteFlagged     = "mcp_tool_flagged"     // … : text for the reviewer's attention, unchanged
	noteUnannounced = "mcp_tool_changed_unannounced"
	noteRemoved     = "mcp_tool_removed"
)

// Codes of a call to a tool that may not be called (the refusal's code).
const (
	codeChanged   = "tool_definition_changed" // differs from its pin
	codeNotPinned = "tool_not_pinned"         // first seen, from an upstream not trusted on first use
	codeRefused   = "tool_refused"            // vetting refused the definition
	codeRemoved   = "tool_removed"            // gone from the upstream's list at a re-check
)

// FirstSeen says what the proxy does with a tool whose definition no pin
// names (neither Config.Pins nor the policy bundle's mcp_tools).
type FirstSeen string

const (
	// FirstSeenQuarantine (also the zero value): the tool is hidden and its
	// calls refused until an administrator pins its definition.
	FirstSeenQuarantine FirstSeen = "quarantine"
	// FirstSeenExpose: trust on first use. The tool is exposed, vetted, and
	// its hash pinned in the log; a later change is quarantined.
	FirstSeenExpose FirstSeen = "expose"
)

// DefaultRecheck is how often the proxy lists the upstreams' tools again
// when Config.Recheck is zero.
const DefaultRecheck = 30 * time.Second

// Config configures a Proxy.
type Config struct {
	Upstreams []Upstream
	// Log records the proxy's own events (tool pins and quarantines); the
	// gateway records the calls.
	Log gateway.Recorder
	// History, when set, is read for the pins recorded by earlier runs.
	History gateway.LogReader
	// Pins are the tool definitions an administrator accepted (rulelock
	// mcp pin writes them): qualified tool name → "sha256:…". A tool they
	// name is accepted with exactly that hash; the policy bundle's
	// mcp_tools take precedence.
	Pins map[string]string
	// ActionTypes are action types that other executors serve: an
	// upstream tool whose qualified name is one of them is refused — an
	// error from New, a refused tool if it appears later.
	ActionTypes []string
	// Recheck is how often every upstream's tools are listed again, so that
	// a definition changed without notifications/tools/list_changed is
	// quarantined (default DefaultRecheck; negative: only before the first
	// call of each session).
	Recheck time.Duration
	// ApprovalWait is how long a call that needs approval waits for the
	// quorum before returning the pending request id (default 30s).
	ApprovalWait time.Duration
	// NameSeparator joins an upstream's name and a tool's in the names the
	// agent sees (default "."; see names.go). Action types always use ".".
	NameSeparator string
	// Logger receives diagnostics (stderr in stdio mode; default discard).
	Logger *slog.Logger
	// Stderr receives the stdio upstreams' stderr (default os.Stderr).
	Stderr io.Writer
	Now    func() time.Time
	// Tracer, when set, records MCP spans (trace.go); nil is off.
	Tracer trace.Tracer
}

// Proxy mediates MCP tool calls. Create it with New, give its Executor to
// the gateway (gateway.Config.ExecutorFor), then Attach the gateway.
type Proxy struct {
	cfg      Config
	logger   *slog.Logger
	stderr   io.Writer
	gw       *gateway.Gateway
	ups      []*upstream
	progress *progressRouter
	results  *resultStash
	reserved map[string]bool // Config.ActionTypes
	stop     chan struct{}   // closed by Close: ends the recheck loop
	// replica names this proxy among replicas in the MCP session ids it
	// issues: sessions live in one process, and a request naming one
	// that another replica (or this one before a restart) opened is told
	// so (guardHTTP).
	replica string
	loop    sync.WaitGroup

	mu       sync.Mutex
	tools    map[string]*tool  // by qualified name: what the upstreams list now
	pinned   map[string]string // qualified name → hash first seen (FirstSeenExpose)
	servers  map[string]*agentServer
	sessions map[*mcp.ServerSession]*recheck // sessions whose first call re-checks the definitions

	reqIDs requestIDs // with tracing: the JSON-RPC ids of calls read, for their spans
}

// New checks the configuration, connects every upstream, lists and vets
// their tools. Collisions (with each other or with Config.ActionTypes) and
// reserved or invalid names are errors.
func New(ctx context.Context, cfg Config) (*Proxy, error) {
	if cfg.Log == nil {
		return nil, errors.New("mcp proxy: a log is required")
	}
	if err := checkSeparator(cfg.NameSeparator); err != nil {
		return nil, err
	}
	if cfg.ApprovalWait <= 0 {
		cfg.ApprovalWait = 30 * time.Second
	}
	if cfg.Recheck == 0 {
		cfg.Recheck = DefaultRecheck
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Proxy{cfg: cfg, logger: cfg.Logger, stderr: cfg.Stderr, progress: newProgressRouter(), results: newResultStash(),
		reserved: map[string]bool{}, stop: make(chan struct{}), replica: rand.Text()[:8],
		tools: map[string]*tool{}, pinned: map[string]string{}, servers: map[string]*agentServer{}, sessions: map[*mcp.ServerSession]*recheck{}}
	if p.logger == nil {
		p.logger = slog.New(slog.DiscardHandler)
	}
	if p.stderr == nil {
		p.stderr = os.Stderr
	}
	for _, at := range cfg.ActionTypes {
		p.reserved[at] = true
	}
	seen := map[string]bool{}
	for _, uc := range cfg.Upstreams {
		if err := uc.Validate(); err != nil {
			return nil, err
		}
		if seen[uc.Name] {
			return nil, fmt.Errorf("upstream %q is declared twice", uc.Name)
		}
		seen[uc.Name] = true
		if uc.Timeout <= 0 {
			uc.Timeout = 30 * time.Second
		}
		p.ups = append(p.ups, &upstream{cfg: uc, proxy: p, ready: make(chan struct{})})
	}
	if cfg.History != nil {
		if err := p.loadPins(cfg.History); err != nil {
			return nil, err
		}
	}
	for _, u := range p.ups {
		if err := u.connect(ctx); err != nil {
			p.Close()
			return nil, err
		}
		defs, err := u.list(ctx)
		if err != nil {
			p.Close()
			return nil, err
		}
		for _, d := range defs {
			t, err := newTool(u, d)
			if err != nil {
				p.Close()
				return nil, err
			}
			if _, dup := p.tools[t.Qualified]; dup {
				p.Close()
				return nil, fmt.Errorf("upstream %q lists tool %q twice", u.cfg.Name, d.Name)
			}
			if p.reserved[t.Qualified] {
				p.Close()
				return nil, fmt.Errorf("upstream %q lists tool %q, whose qualified name %q is an action type the gateway already executes (executors): rename the upstream or the executor", u.cfg.Name, d.Name, t.Qualified)
			}
			p.tools[t.Qualified] = t
		}
	}
	if err := p.checkNames(); err != nil {
		p.Close()
		return nil, err
	}
	for _, q := range sortedKeys(p.tools) {
		if err := p.sighted(ctx, p.tools[q], nil, true); err != nil {
			p.Close()
			return nil, err
		}
	}
	if cfg.Recheck > 0 {
		p.loop.Add(1)
		go p.recheckLoop()
	}
	return p, nil
}

// Attach gives the proxy the gateway that decides its calls.
func (p *Proxy) Attach(gw *gateway.Gateway) { p.gw = gw }

// Close disconnects the upstreams (stopping the stdio ones).
func (p *Proxy) Close() error {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.loop.Wait()
	var errs []error
	for _, u := range p.ups {
		errs = append(errs, u.close())
	}
	return errors.Join(errs...)
}

// Tools lists the tools the upstreams offer now, with their hashes and
// whether each is accepted (not quarantined) under the active policy.
func (p *Proxy) Tools() []ToolInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []ToolInfo
	for _, q := range sortedKeys(p.tools) {
		t := p.tools[q]
		qr := p.statusLocked(t)
		ti := ToolInfo{Name: q, SHA256: t.Hash, Pinned: p.pinFor(t), Accepted: qr == nil, Findings: t.Findings}
		if qr != nil {
			ti.Quarantined = qr.code
		}
		out = append(out, ti)
	}
	return out
}

// ToolInfo describes one upstream tool.
type ToolInfo struct {
	Name        string    `json:"name"`
	SHA256      string    `json:"sha256"`
	Pinned      string    `json:"pinned"`
	Accepted    bool      `json:"accepted"`
	Quarantined string    `json:"quarantined,omitempty"` // why not: tool_not_pinned, tool_definition_changed, tool_refused
	Findings    []Finding `json:"findings,omitempty"`
}

// loadPins reads the pins of earlier runs from the log.
func (p *Proxy) loadPins(lr gateway.LogReader) error {
	err := gateway.EachEntry(lr, func(_ int64, _ []byte, e *audit.Entry) error {
		if e.Kind != audit.KindNote {
			return nil
		}
		var kind, q, hash string
		if n, _ := fmt.Sscanf(e.Message, "%s %s %s", &kind, &q, &hash); n == 3 && kind == notePinned {
			if _, ok := p.pinned[q]; !ok {
				p.pinned[q] = hash
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mcp proxy: read pins: %w", err)
	}
	return nil
}

// sighted records what a new definition of a tool means, once per
// definition seen: the vetting's findings, an unannounced change (prev is
// the definition it replaces; announced says whether the upstream sent
// list_changed), a first-seen pin when its upstream trusts on first use,
// and its quarantine.
func (p *Proxy) sighted(ctx context.Context, t *tool, prev *tool, announced bool) error {
	var notes []string
	if prev != nil && prev.Hash != t.Hash && !announced {
		p.logger.Warn("tool definition changed without notifications/tools/list_changed", "tool", t.Qualified, "was", prev.Hash, "now", t.Hash)
		notes = append(notes, fmt.Sprintf("%s %s %s was %s", noteUnannounced, t.Qualified, t.Hash, prev.Hash))
	}
	if len(t.Findings) > 0 {
		kind := noteFlagged
		for _, f := range t.Findings {
			if f.Severity == Sanitised {
				kind = noteSanitised
			}
		}
		if t.Refused {
			kind = noteRefused
		}
		var fs []string
		for _, f := range t.Findings {
			fs = append(fs, f.String())
		}
		p.logger.Warn("tool definition "+strings.TrimPrefix(kind, "mcp_tool_"), "tool", t.Qualified, "hash", t.Hash, "findings", fs)
		notes = append(notes, fmt.Sprintf("%s %s %s: %s", kind, t.Qualified, t.Hash, strings.Join(fs, "; ")))
	}
	p.mu.Lock()
	if _, ok := p.pinned[t.Qualified]; !ok && !t.Refused && t.Upstream.cfg.FirstSeen == FirstSeenExpose && p.pinFor(t) == "" {
		p.pinned[t.Qualified] = t.Hash
		notes = append(notes, fmt.Sprintf("%s %s %s", notePinned, t.Qualified, t.Hash))
	}
	qr := p.statusLocked(t)
	p.mu.Unlock()
	if qr != nil {
		p.logger.Warn("tool quarantined", "tool", t.Qualified, "hash", t.Hash, "code", qr.code, "why", qr.why)
		notes = append(notes, fmt.Sprintf("%s %s %s %s", noteQuarantined, t.Qualified, t.Hash, qr.code))
	}
	for _, n := range notes {
		if err := p.note(ctx, n, t.Canonical); err != nil {
			return err
		}
	}
	return nil
}

func (p *Proxy) note(ctx context.Context, msg string, def []byte) error {
	_, err := p.cfg.Log.Append(ctx, &audit.Entry{Kind: audit.KindNote, Time: p.cfg.Now().UTC(),
		EngineVersion: gateway.EngineVersion, Message: msg, State: audit.Text(string(def))})
	if err != nil {
		return fmt.Errorf("mcp proxy: record %s: %w", msg, err)
	}
	return nil
}

// quarantine says why a tool may not be called.
type quarantine struct{ code, why string }

// bundlePin is the active policy bundle's pin of tool q, if it has one.
func (p *Proxy) bundlePin(q string) (string, bool) {
	if p.gw == nil {
		return "", false
	}
	doc, ok := p.gw.Active().Policy.Data(PinsDocument)
	if !ok {
		return "", false
	}
	m, _ := doc.(map[string]any)
	want, ok := m[q].(string)
	return want, ok
}

// pinFor is the hash that pins t: the bundle's, else Config.Pins', else
// the first-seen one of an upstream that trusts on first use ("" for
// none). p.mu is held.
func (p *Proxy) pinFor(t *tool) string {
	if want, ok := p.bundlePin(t.Qualified); ok {
		return want
	}
	if want, ok := p.cfg.Pins[t.Qualified]; ok {
		return want
	}
	if t.Upstream.cfg.FirstSeen == FirstSeenExpose {
		return p.pinned[t.Qualified]
	}
	return ""
}

// statusLocked returns nil when t may be called under the active policy,
// else why not. p.mu is held.
func (p *Proxy) statusLocked(t *tool) *quarantine {
	switch {
	case t.Refused:
		var fs []string
		for _, f := range t.Findings {
			if f.Severity == Refused {
				fs = append(fs, f.String())
			}
		}
		return &quarantine{codeRefused, fmt.Sprintf("the definition of %s (%s) is refused: %s", t.Qualified, t.Hash, strings.Join(fs, "; "))}
	case p.reserved[t.Qualified]:
		return &quarantine{codeRefused, fmt.Sprintf("%s is an action type the gateway executes otherwise", t.Qualified)}
	}
	pin := p.pinFor(t)
	switch {
	case pin == t.Hash:
		return nil
	case pin == "":
		return &quarantine{codeNotPinned, fmt.Sprintf("%s (%s) is quarantined until an administrator pins it (rulelock mcp pin): upstream %q is not trusted on first use", t.Qualified, t.Hash, t.Upstream.cfg.Name)}
	}
	return &quarantine{codeChanged, fmt.Sprintf("the definition of %s (%s) is not the one pinned (%s); after review, pin it (rulelock mcp pin) or accept it in a policy bundle", t.Qualified, t.Hash, pin)}
}

// resync lists an upstream's tools again — after list_changed (announced),
// on the recheck interval or before a session's first call: new tools are
// vetted and pinned or quarantined, changed ones quarantined, removed ones
// dropped.
func (p *Proxy) resync(u *upstream, announced bool) error {
	u.resyncMu.Lock()
	defer u.resyncMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), u.cfg.Timeout)
	defer cancel()
	defs, err := u.list(ctx)
	if err != nil {
		p.logger.Error("resync failed: the upstream's tools keep their last definitions", "upstream", u.cfg.Name, "err", err)
		return err
	}
	now := map[string]*tool{}
	for _, d := range defs {
		t, err := newTool(u, d)
		if err != nil {
			p.logger.Error("resync: tool refused", "upstream", u.cfg.Name, "err", err)
			continue
		}
		now[t.Qualified] = t
	}
	p.mu.Lock()
	var removed []string
	for q, t := range p.tools {
		if t.Upstream == u && now[q] == nil {
			delete(p.tools, q)
			removed = append(removed, q)
		}
	}
	type change struct{ t, prev *tool }
	var changed []change
	for q, t := range now {
		if other := p.collision(p.tools, q); other != "" && p.tools[other].Upstream != u {
			p.logger.Error("resync: tool refused: the agent would see it under the name of another", "tool", q, "other", other, "name", p.exposedName(q))
			continue
		}
		old := p.tools[q]
		if old != nil && old.Hash == t.Hash {
			continue // keep the definition the agents were given
		}
		changed = append(changed, change{t, old})
		p.tools[q] = t
	}
	p.mu.Unlock()
	sort.Strings(removed)
	var errs []error
	for _, q := range removed {
		errs = append(errs, p.note(ctx, fmt.Sprintf("%s %s", noteRemoved, q), nil))
	}
	sort.Slice(changed, func(i, j int) bool { return changed[i].t.Qualified < changed[j].t.Qualified })
	for _, c := range changed {
		errs = append(errs, p.sighted(ctx, c.t, c.prev, announced))
	}
	p.refreshServers()
	if err := errors.Join(errs...); err != nil {
		p.logger.Error("resync", "err", err)
		return err
	}
	return nil
}

// lookup returns the tool and, when it may not be called, why.
func (p *Proxy) lookup(name string) (*tool, *quarantine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.tools[name]
	if t == nil {
		return nil, nil
	}
	return t, p.statusLocked(t)
}

// Executor returns the executor for an action type that names a tool, or
// nil; give it to the gateway as Config.ExecutorFor.
func (p *Proxy) Executor(actionType string) gateway.Executor {
	if t, _ := p.lookup(actionType); t == nil {
		return nil
	}
	return gateway.ExecutorFunc(p.execute)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// visible lists the tools the agent may see: accepted, and possibly
// allowed by the active policy.
func (p *Proxy) visible(agent policy.Agent) map[string]*tool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]*tool{}
	var pol *policy.Policy
	if p.gw != nil {
		pol = p.gw.Active().Policy
	}
	for q, t := range p.tools {
		if p.statusLocked(t) != nil {
			continue
		}
		if pol == nil || !pol.MayAllow(q, agent) {
			continue
		}
		out[q] = t
	}
	return out
}

// Definition is an upstream tool's definition as the proxy judged it, for
// an administrator to review before pinning it (rulelock mcp pin).
type Definition struct {
	ToolInfo
	Upstream string
	// Raw is the upstream's definition, decoded (strictjson values; nil
	// when it is not strict JSON): what the hash covers. Print it with
	// Render, never as is.
	Raw any
	// Exposed is what an agent sees once the tool is accepted (nil for a
	// refused tool).
	Exposed *mcp.Tool
}

// Definitions lists the upstreams' tools with their definitions.
func (p *Proxy) Definitions() []Definition {
	infos := p.Tools()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Definition, 0, len(infos))
	for _, ti := range infos {
		t := p.tools[ti.Name]
		d := Definition{ToolInfo: ti, Upstream: t.Upstream.cfg.Name}
		if !t.Refused {
			d.Exposed = t.exposed(t.Qualified)
		}
		if v, err := strictjson.Decode(t.Canonical, strictjson.Limits{MaxBytes: 4 << 20, MaxDepth: 256}); err == nil {
			d.Raw = v
		}
		out = append(out, d)
	}
	return out
}

// Inspect connects to the upstreams, lists and vets their tools and
// disconnects, recording nothing: what rulelock mcp pin shows. Pins and
// ActionTypes of cfg apply; its Log is not used.
func Inspect(ctx context.Context, cfg Config) ([]Definition, error) {
	cfg.Log, cfg.History, cfg.Recheck = discard{}, nil, -1
	p, err := New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return p.Definitions(), nil
}

type discard struct{}

func (discard) Append(context.Context, *audit.Entry) (audit.Receipt, error) {
	return audit.Receipt{}, nil
}
