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
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// PinsDocument is the data document of a policy bundle that pins tool
// definitions: {"fs.read_text_file": "sha256:…"}. A tool it names is
// accepted only with exactly that hash; a tool it does not name is pinned
// at first sight (recorded in the log) and quarantined if it changes.
const PinsDocument = "mcp_tools"

// Meta keys: what the agent may put in a tools/call's _meta, and where the
// machine-readable decision goes in the result's _meta.
const (
	MetaInstruction = "io.rulelock/instruction"
	MetaReasoning   = "io.rulelock/reasoning"
	MetaSession     = "io.rulelock/session"
	MetaDecision    = "io.rulelock/decision"
)

// Log messages of the proxy's note entries.
const (
	notePinned      = "mcp_tool_pinned"
	noteQuarantined = "mcp_tool_quarantined"
	noteRemoved     = "mcp_tool_removed"
)

// Config configures a Proxy.
type Config struct {
	Upstreams []Upstream
	// Log records the proxy's own events (tool pins and quarantines); the
	// gateway records the calls.
	Log gateway.Recorder
	// History, when set, is read for the pins recorded by earlier runs.
	History gateway.LogReader
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

	mu      sync.Mutex
	tools   map[string]*tool  // by qualified name: what the upstreams list now
	pinned  map[string]string // qualified name → hash first seen
	servers map[string]*agentServer
}

// New checks the configuration, connects every upstream, lists and pins
// their tools. Collisions and reserved or invalid names are errors.
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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Proxy{cfg: cfg, logger: cfg.Logger, stderr: cfg.Stderr, progress: newProgressRouter(), results: newResultStash(),
		tools: map[string]*tool{}, pinned: map[string]string{}, servers: map[string]*agentServer{}}
	if p.logger == nil {
		p.logger = slog.New(slog.DiscardHandler)
	}
	if p.stderr == nil {
		p.stderr = os.Stderr
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
			p.tools[t.Qualified] = t
		}
	}
	if err := p.checkNames(); err != nil {
		p.Close()
		return nil, err
	}
	for _, q := range sortedKeys(p.tools) {
		if err := p.pin(ctx, p.tools[q]); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

// Attach gives the proxy the gateway that decides its calls.
func (p *Proxy) Attach(gw *gateway.Gateway) { p.gw = gw }

// Close disconnects the upstreams (stopping the stdio ones).
func (p *Proxy) Close() error {
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
		ok, _ := p.acceptedLocked(t)
		out = append(out, ToolInfo{Name: q, SHA256: t.Hash, Pinned: p.pinned[q], Accepted: ok})
	}
	return out
}

// ToolInfo describes one upstream tool.
type ToolInfo struct {
	Name     string `json:"name"`
	SHA256   string `json:"sha256"`
	Pinned   string `json:"pinned"`
	Accepted bool   `json:"accepted"`
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

// pin records a tool's first-seen hash, or its quarantine when it differs
// from the pin.
func (p *Proxy) pin(ctx context.Context, t *tool) error {
	p.mu.Lock()
	prev, ok := p.pinned[t.Qualified]
	if !ok {
		p.pinned[t.Qualified] = t.Hash
	}
	p.mu.Unlock()
	switch {
	case !ok:
		return p.note(ctx, fmt.Sprintf("%s %s %s", notePinned, t.Qualified, t.Hash), t.Canonical)
	case prev != t.Hash:
		p.logger.Warn("tool definition changed: quarantined", "tool", t.Qualified, "pinned", prev, "now", t.Hash)
		return p.note(ctx, fmt.Sprintf("%s %s %s pinned %s", noteQuarantined, t.Qualified, t.Hash, prev), t.Canonical)
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

// accepted reports whether a tool may be called under the active policy:
// the bundle's pin if it has one for the tool, else the first-seen pin.
func (p *Proxy) accepted(t *tool) (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acceptedLocked(t)
}

func (p *Proxy) acceptedLocked(t *tool) (bool, string) {
	if p.gw != nil {
		if doc, ok := p.gw.Active().Policy.Data(PinsDocument); ok {
			if m, ok := doc.(map[string]any); ok {
				if want, ok := m[t.Qualified].(string); ok {
					if want == t.Hash {
						return true, ""
					}
					return false, fmt.Sprintf("the definition of %s (%s) is not the one the policy bundle pins (%s)", t.Qualified, t.Hash, want)
				}
			}
		}
	}
	if pin := p.pinned[t.Qualified]; pin != t.Hash {
		return false, fmt.Sprintf("the definition of %s changed since it was pinned (%s, now %s); a policy bundle must accept the new hash", t.Qualified, pin, t.Hash)
	}
	return true, ""
}

// resync lists an upstream's tools again after list_changed: new tools are
// pinned, changed ones quarantined, removed ones dropped.
func (p *Proxy) resync(u *upstream) {
	u.resyncMu.Lock()
	defer u.resyncMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), u.cfg.Timeout)
	defer cancel()
	defs, err := u.list(ctx)
	if err != nil {
		p.logger.Error("resync failed: the upstream's tools keep their last definitions", "upstream", u.cfg.Name, "err", err)
		return
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
	var changed []*tool
	for q, t := range now {
		if other := p.collision(p.tools, q); other != "" && p.tools[other].Upstream != u {
			p.logger.Error("resync: tool refused: the agent would see it under the name of another", "tool", q, "other", other, "name", p.exposedName(q))
			continue
		}
		if old := p.tools[q]; old == nil || old.Hash != t.Hash {
			changed = append(changed, t)
		}
		p.tools[q] = t
	}
	p.mu.Unlock()
	sort.Strings(removed)
	for _, q := range removed {
		if err := p.note(ctx, fmt.Sprintf("%s %s", noteRemoved, q), nil); err != nil {
			p.logger.Error("resync", "err", err)
		}
	}
	sort.Slice(changed, func(i, j int) bool { return changed[i].Qualified < changed[j].Qualified })
	for _, t := range changed {
		if err := p.pin(ctx, t); err != nil {
			p.logger.Error("resync", "err", err)
		}
	}
	p.refreshServers()
}

// lookup returns the tool and, when it may not be called, why.
func (p *Proxy) lookup(name string) (*tool, bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.tools[name]
	if t == nil {
		return nil, false, ""
	}
	ok, why := p.acceptedLocked(t)
	return t, ok, why
}

// Executor returns the executor for an action type that names a tool, or
// nil; give it to the gateway as Config.ExecutorFor.
func (p *Proxy) Executor(actionType string) gateway.Executor {
	if t, _, _ := p.lookup(actionType); t == nil {
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
		if ok, _ := p.acceptedLocked(t); !ok {
			continue
		}
		if pol == nil || !pol.MayAllow(q, agent) {
			continue
		}
		out[q] = t
	}
	return out
}
