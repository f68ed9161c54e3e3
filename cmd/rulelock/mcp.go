package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"sort"

	"github.com/rulelock/rulelock/internal/mcpproxy"
	"github.com/rulelock/rulelock/policy"
)

// mcpConfig is the config file's mcp section: the MCP servers rulelock
// stands in front of.
type mcpConfig struct {
	// ApprovalWait is how long a tools/call that needs approval waits for
	// the quorum before it returns the pending request id (default 30s:
	// below the 60s request timeout of the MCP SDKs, which progress
	// notifications do not reset unless the client asks).
	ApprovalWait duration `yaml:"approval_wait"`
	// NameSeparator joins an upstream's name and its tool's in the names
	// agents see: "_" by default (fs_read_text_file), which every model
	// API accepts in a function name; "." keeps the action type's form.
	NameSeparator *string             `yaml:"name_separator"`
	Upstreams     []mcpUpstreamConfig `yaml:"upstreams"`
	// Pins is the pin file: the tool definitions an administrator accepted,
	// {"fs.read_text_file": "sha256:…"}, written by rulelock mcp pin
	// (default DATA_DIR/mcp-pins.json). Read at start.
	Pins string `yaml:"pins"`
	// Recheck is how often the upstreams' tools are listed again, to catch
	// a definition changed without list_changed (default 30s).
	Recheck duration `yaml:"recheck"`
}

type mcpUpstreamConfig struct {
	Name string `yaml:"name"` // prefixes the tools: name.tool

	// stdio
	Command string                  `yaml:"command"`
	Args    []string                `yaml:"args"`
	Env     map[string]headerSource `yaml:"env"` // the whole environment; PATH is added when missing
	Dir     string                  `yaml:"dir"`

	// streamable HTTP
	URL     string                  `yaml:"url"`
	Headers map[string]headerSource `yaml:"headers"`

	Timeout       duration `yaml:"timeout"`
	PathMode      string   `yaml:"path_mode"`      // strict (default): no symbolic links, the path watched during the call; or resolve
	Roots         []string `yaml:"roots"`          // announced to the upstream, and the only directories path arguments may name
	PathArguments []string `yaml:"path_arguments"` // arguments resolved to real paths before the decision
	// SensitiveArguments are kept out of the audit log (a salted
	// commitment in their place), in every tool of the upstream.
	SensitiveArguments []string `yaml:"sensitive_arguments"`

	// FirstSeen: a tool no pin names is quarantined until pinned
	// ("quarantine", the default) or exposed and pinned at first sight
	// ("expose": trust on first use).
	FirstSeen string          `yaml:"first_seen"`
	Limits    mcpLimitsConfig `yaml:"definition_limits"`
}

// mcpLimitsConfig caps an upstream's tool definitions (0: the defaults).
type mcpLimitsConfig struct {
	Text       int `yaml:"text"`       // bytes of any one string (default 4096)
	Definition int `yaml:"definition"` // bytes of a whole definition (default 65536)
	Depth      int `yaml:"depth"`      // JSON nesting depth (default 24)
}

func (c *mcpConfig) validate() error {
	if c.NameSeparator != nil && *c.NameSeparator == "" {
		return errors.New(`mcp.name_separator: give one to three of _ - . (or leave it out for "_")`)
	}
	seen := map[string]bool{}
	for i, u := range c.Upstreams {
		if seen[u.Name] {
			return fmt.Errorf("mcp.upstreams[%d]: upstream %q is declared twice: its tools' names would collide", i, u.Name)
		}
		seen[u.Name] = true
		up := mcpproxy.Upstream{Name: u.Name, Command: u.Command, URL: u.URL, Roots: u.Roots,
			PathArguments: u.PathArguments, PathMode: mcpproxy.PathMode(u.PathMode), FirstSeen: mcpproxy.FirstSeen(u.FirstSeen)}
		if err := up.Validate(); err != nil {
			return fmt.Errorf("mcp.upstreams[%d]: %v", i, err)
		}
		if err := checkSources(fmt.Sprintf("mcp upstream %q env", u.Name), u.Env); err != nil {
			return err
		}
		if err := checkSources(fmt.Sprintf("mcp upstream %q header", u.Name), u.Headers); err != nil {
			return err
		}
		for _, a := range u.SensitiveArguments {
			if a == "" || a == "type" {
				return fmt.Errorf("mcp upstream %q: sensitive_arguments: %q is not an argument name", u.Name, a)
			}
		}
		for _, r := range u.Roots {
			if !filepath.IsAbs(r) {
				return fmt.Errorf("mcp upstream %q: root %q is not an absolute path", u.Name, r)
			}
		}
	}
	return nil
}

// upstreams resolves the upstreams' environments and credentials.
func (c *mcpConfig) upstreams(getenv func(string) string) ([]mcpproxy.Upstream, error) {
	var out []mcpproxy.Upstream
	for _, u := range c.Upstreams {
		up := mcpproxy.Upstream{Name: u.Name, Command: u.Command, Args: u.Args, Dir: u.Dir, URL: u.URL,
			Timeout: u.Timeout.Duration, Roots: u.Roots, PathArguments: u.PathArguments, SensitiveArguments: u.SensitiveArguments,
			FirstSeen: mcpproxy.FirstSeen(u.FirstSeen),
			Limits:    mcpproxy.DefinitionLimits{Text: u.Limits.Text, Definition: u.Limits.Definition, Depth: u.Limits.Depth}}
		if u.Command != "" {
			env := map[string]string{}
			for k, src := range u.Env {
				v, err := src.resolve(getenv)
				if err != nil {
					return nil, fmt.Errorf("mcp upstream %q env %s: %v", u.Name, k, err)
				}
				env[k] = v
			}
			if _, ok := env["PATH"]; !ok {
				env["PATH"] = getenv("PATH")
			}
			keys := make([]string, 0, len(env))
			for k := range env {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				up.Env = append(up.Env, k+"="+env[k])
			}
		}
		if len(u.Headers) > 0 {
			up.Headers = http.Header{}
			for name, src := range u.Headers {
				v, err := src.resolve(getenv)
				if err != nil {
					return nil, fmt.Errorf("mcp upstream %q header %q: %v", u.Name, name, err)
				}
				up.Headers.Set(name, v)
			}
		}
		up.PathMode = mcpproxy.PathMode(u.PathMode)
		out = append(out, up)
	}
	return out, nil
}

// proxyConfig is the proxy's configuration from the config file: the
// upstreams with their credentials, the pin file's pins, and the action
// types the config's executors serve (an upstream tool may not take one).
func (cfg *serveConfig) proxyConfig(e *env) (mcpproxy.Config, error) {
	ups, err := cfg.MCP.upstreams(e.getenv)
	if err != nil {
		return mcpproxy.Config{}, &exitError{code: 2, err: fmt.Errorf("invalid config: %v", err)}
	}
	pins, err := readPins(cfg.pinsPath())
	if err != nil {
		return mcpproxy.Config{}, &exitError{code: 2, err: fmt.Errorf("invalid config: mcp pins: %v", err)}
	}
	var types []string
	for t := range cfg.Executors {
		types = append(types, t)
	}
	sort.Strings(types)
	sep := "_"
	if cfg.MCP.NameSeparator != nil {
		sep = *cfg.MCP.NameSeparator
	}
	return mcpproxy.Config{Upstreams: ups, Pins: pins, ActionTypes: types, Recheck: cfg.MCP.Recheck.Duration, NameSeparator: sep, Stderr: e.stderr,
		Logger: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}, nil
}

// startProxy connects the configured MCP upstreams (nil without any).
func startProxy(ctx context.Context, e *env, cfg *serveConfig, r *running) (*mcpproxy.Proxy, error) {
	if len(cfg.MCP.Upstreams) == 0 {
		return nil, nil
	}
	pc, err := cfg.proxyConfig(e)
	if err != nil {
		return nil, err
	}
	pc.Log, pc.History, pc.ApprovalWait = r.log, r.log, cfg.MCP.ApprovalWait.Duration
	pc.Tracer = r.tracing.Tracer
	p, err := mcpproxy.New(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("mcp: %w", err)
	}
	ups := pc.Upstreams
	n := 0
	for _, t := range p.Tools() {
		if t.Accepted {
			n++
		}
	}
	fmt.Fprintf(e.stderr, "rulelock: mcp: %d upstream(s), %d tools (%d accepted)\n", len(ups), len(p.Tools()), n)
	if q := len(p.Tools()) - n; q > 0 {
		fmt.Fprintf(e.stderr, "rulelock: mcp: %d tools quarantined (not pinned, changed or refused): review and pin them with rulelock mcp pin --config FILE\n", q)
	}
	return p, nil
}

func mcpCommands() []command {
	return []command{
		{"mcp", "serve one agent over MCP on stdio, mediating its tool calls (the gateway's HTTP API stays up for approvers); mcp pin: review and pin the upstreams' tool definitions", runMCP},
	}
}

// runMCP runs the gateway with the config's MCP upstreams and serves one
// agent on stdin/stdout. Everything rulelock says goes to stderr.
func runMCP(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 && args[0] == "pin" {
		return runMCPPin(ctx, e, args[1:])
	}
	fs := newFlags(e, "mcp", "--config FILE [--agent ID] [--bundle DIR --trust FILE | --policy DIR] [--data DIR] [--listen ADDR] [--list-tools]\n       rulelock mcp pin --config FILE [--write [TOOL[=HASH] ...]]")
	cfgPath := fs.String("config", "", "configuration file with an mcp section (YAML; see docs/mcp.md)")
	agentID := fs.String("agent", "", "the agent on stdio: an id from the config's agents (default: the only one)")
	policyPath := fs.String("policy", "", "policy directory (development mode: not a signed bundle)")
	bundlePath := fs.String("bundle", "", "signed policy bundle directory")
	trustPath := fs.String("trust", "", "trust file for the bundle")
	dataDir := fs.String("data", "", "data directory (default ./rulelock-data)")
	listen := fs.String("listen", "", "address of the HTTP API for approvers (default 127.0.0.1:8080)")
	listTools := fs.Bool("list-tools", false, "print the upstreams' tools with their definition hashes (for a bundle's mcp_tools pins) and exit")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return usageError("mcp needs --config FILE with an mcp section")
	}
	cfg, err := readConfig(*cfgPath)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("invalid config: %v", err)}
	}
	if len(cfg.MCP.Upstreams) == 0 {
		return &exitError{code: 2, err: fmt.Errorf("invalid config: %s has no mcp.upstreams", *cfgPath)}
	}
	setIf(&cfg.Policy, *policyPath)
	setIf(&cfg.Bundle, *bundlePath)
	setIf(&cfg.Trust, *trustPath)
	setIf(&cfg.DataDir, *dataDir)
	setIf(&cfg.Listen, *listen)
	if err := cfg.defaults(); err != nil {
		return err
	}
	var agent policy.Agent
	switch {
	case *agentID != "":
		for _, a := range cfg.Agents {
			if a.ID == *agentID {
				agent = policy.Agent{ID: a.ID, Roles: a.Roles}
			}
		}
		if agent.ID == "" {
			return usageError("agent %q is not in the config's agents", *agentID)
		}
	case len(cfg.Agents) == 1:
		agent = policy.Agent{ID: cfg.Agents[0].ID, Roles: cfg.Agents[0].Roles}
	default:
		return usageError("give --agent ID: the config declares several agents (or none)")
	}
	g, err := startGateway(ctx, e, cfg, false)
	if err != nil {
		return err
	}
	if g.proxy == nil {
		g.close()
		return fmt.Errorf("mcp: no proxy started")
	}
	if *listTools {
		defer g.close()
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(g.proxy.Tools())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		in, _ := e.stdin.(io.ReadCloser)
		if in == nil {
			in = io.NopCloser(e.stdin)
		}
		out, _ := e.stdout.(io.WriteCloser)
		if out == nil {
			out = nopWriteCloser{e.stdout}
		}
		done <- g.proxy.ServeStdio(ctx, agent, in, out)
		cancel() // the agent hung up: shut the gateway down
	}()
	fmt.Fprintf(e.stderr, "rulelock: mcp: serving agent %q on stdio\n", agent.ID)
	err = g.serve(ctx)
	if serr := <-done; serr != nil && err == nil && ctx.Err() == nil {
		err = serr
	}
	return err
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
