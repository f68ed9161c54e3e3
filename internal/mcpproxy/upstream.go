package mcpproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	neturl "net/url"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.opentelemetry.io/otel/attribute"

	"github.com/rulelock/rulelock/internal/gateway"
)

// Upstream declares one MCP server behind rulelock.
type Upstream struct {
	// Name prefixes its tools: tool "read_file" of upstream "fs" is
	// "fs.read_file" to the agent. Lower-case letters, digits, _ and -.
	Name string

	// Stdio: the command rulelock starts, its arguments, and its whole
	// environment (KEY=VALUE; nothing of rulelock's own is inherited).
	Command string
	Args    []string
	Env     []string
	Dir     string

	// Streamable HTTP: the endpoint and the headers rulelock sends, with the
	// credentials the gateway holds. The agent's headers are never sent.
	URL     string
	Headers http.Header

	// Timeout bounds each forwarded call (default 30s).
	Timeout time.Duration

	// Roots are announced to the upstream as the client's roots. None are
	// announced unless configured: a filesystem server replaces its allowed
	// directories with the roots a client sends.
	Roots []string

	// PathMode is PathStrict (the zero value) or PathResolve: see them.
	PathMode PathMode

	// PathArguments name the arguments that hold file system paths (a
	// string or a list of strings). Rulelock resolves each one as the
	// filesystem server does — relative to the roots, "." and "..",
	// repeated slashes, Unicode NFC equivalents of missing names, symbolic
	// links — before the decision, refuses any that ends outside Roots, and
	// forwards exactly the resolved path, so the policy and the log name
	// the file the server opens. rulelock must see the same file system as
	// the upstream (a stdio server it starts). PathArguments need Roots.
	PathArguments []string

	// FirstSeen says what happens to a tool no pin names: quarantined
	// until pinned (the zero value) or exposed and pinned at first sight.
	FirstSeen FirstSeen
	// Limits cap its tool definitions (zero: the defaults).
	Limits DefinitionLimits

	// Transport, for tests and programs that embed the proxy, connects to
	// the upstream in place of Command or URL.
	Transport mcp.Transport
	// SensitiveArguments name the arguments, in any of the upstream's
	// tools, whose values are kept out of the audit log: the gateway logs a
	// salted commitment in their place (gateway.Config.Sensitive), and a
	// refused call's arguments are logged without them. The policy and the
	// upstream still see the values.
	SensitiveArguments []string
}

// Validate checks the name and the transport.
func (u *Upstream) Validate() error {
	switch {
	case !upstreamNameRE.MatchString(u.Name):
		return fmt.Errorf("upstream %q: name must be lower-case letters, digits, _ and - (at most 32)", u.Name)
	case reservedUpstreams[u.Name]:
		return fmt.Errorf("upstream %q: the name is reserved", u.Name)
	case (u.Command != "") == (u.URL != "") && u.Transport == nil:
		return fmt.Errorf("upstream %q: give command (stdio) or url (streamable HTTP), not both", u.Name)
	case len(u.PathArguments) > 0 && len(u.Roots) == 0:
		return fmt.Errorf("upstream %q: path_arguments need roots: the directories the server may use", u.Name)
	case u.PathMode != "" && u.PathMode != PathStrict && u.PathMode != PathResolve:
		return fmt.Errorf("upstream %q: path_mode %q: want strict or resolve", u.Name, u.PathMode)
	case len(u.PathArguments) > 0 && u.PathMode != PathResolve && !guardSupported:
		return fmt.Errorf("upstream %q: path_mode strict needs Linux (inotify); set path_mode: resolve to accept the window docs/mcp.md describes", u.Name)
	case u.FirstSeen != "" && u.FirstSeen != FirstSeenQuarantine && u.FirstSeen != FirstSeenExpose:
		return fmt.Errorf("upstream %q: first_seen must be %q or %q, not %q", u.Name, FirstSeenQuarantine, FirstSeenExpose, u.FirstSeen)
	}
	return nil
}

// upstream is a connected MCP server.
type upstream struct {
	cfg   Upstream
	proxy *Proxy
	paths *pathResolver // the roots, resolved when connecting

	ready   chan struct{} // closed once Connect returned
	session *mcp.ClientSession

	resyncMu sync.Mutex
}

// connect starts or dials the upstream and lists its tools.
func (u *upstream) connect(ctx context.Context) error {
	caps := &mcp.ClientCapabilities{} // no roots unless configured
	if len(u.cfg.Roots) > 0 {
		// Roots are deprecated from protocol 2026-07-28 (SEP-2577) but still
		// how the reference filesystem server learns its directories.
		//lint:ignore SA1019 roots bound the filesystem server (see above)
		caps.RootsV2 = &mcp.RootCapabilities{}
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "rulelock", Version: gateway.EngineVersion}, &mcp.ClientOptions{
		Capabilities: caps,
		ToolListChangedHandler: func(ctx context.Context, _ *mcp.ToolListChangedRequest) {
			// It may arrive before Connect returns: resync waits for ready.
			go u.proxy.resync(u, true)
		},
		ProgressNotificationHandler: func(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
			u.proxy.progress.forward(ctx, req.Params)
		},
		Logger: u.proxy.logger,
	})
	u.paths = newPathResolver(u.cfg.PathMode, u.cfg.Roots)
	for _, r := range u.cfg.Roots {
		//lint:ignore SA1019 roots bound the filesystem server (see connect)
		client.AddRoots(&mcp.Root{URI: "file://" + r})
	}
	var t mcp.Transport
	switch {
	case u.cfg.Transport != nil:
		t = u.cfg.Transport
	case u.cfg.Command != "":
		cmd := exec.Command(u.cfg.Command, u.cfg.Args...)
		cmd.Env = u.cfg.Env
		if cmd.Env == nil {
			cmd.Env = []string{}
		}
		cmd.Dir = u.cfg.Dir
		cmd.Stderr = u.proxy.stderr
		t = &mcp.CommandTransport{Command: cmd}
	default:
		hc := &http.Client{
			Transport:     &headerTransport{base: http.DefaultTransport, headers: u.cfg.Headers},
			CheckRedirect: gateway.NoRedirects,
		}
		t = &mcp.StreamableClientTransport{Endpoint: u.cfg.URL, HTTPClient: hc}
	}
	cs, err := client.Connect(ctx, t, nil)
	if err != nil {
		return fmt.Errorf("upstream %q: connect: %w", u.cfg.Name, err)
	}
	u.session = cs
	close(u.ready)
	return nil
}

// list returns the upstream's tools, every page.
func (u *upstream) list(ctx context.Context) ([]*mcp.Tool, error) {
	<-u.ready
	var out []*mcp.Tool
	for t, err := range u.session.Tools(ctx, nil) {
		if err != nil {
			return nil, fmt.Errorf("upstream %q: tools/list: %w", u.cfg.Name, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// spanAttributes are the attributes of a client span to u (trace.go): the
// session and the protocol version it negotiated, and how it is reached —
// a command over its stdin and stdout ("pipe"), or a URL over HTTP
// ("tcp", with the server's host and port). An upstream given as a
// Transport (tests, embedders) says nothing of its network.
func (u *upstream) spanAttributes() []attribute.KeyValue {
	var kv []attribute.KeyValue
	if u.session != nil {
		if id := u.session.ID(); id != "" {
			kv = append(kv, attribute.String("mcp.session.id", id))
		}
		if ir := u.session.InitializeResult(); ir != nil && ir.ProtocolVersion != "" {
			kv = append(kv, attribute.String("mcp.protocol.version", ir.ProtocolVersion))
		}
	}
	switch {
	case u.cfg.Transport != nil:
	case u.cfg.Command != "":
		kv = append(kv, attribute.String("network.transport", "pipe"))
	default:
		kv = append(kv, attribute.String("network.transport", "tcp"), attribute.String("network.protocol.name", "http"))
		if url, err := neturl.Parse(u.cfg.URL); err == nil && url.Hostname() != "" {
			kv = append(kv, attribute.String("server.address", url.Hostname()))
			port := url.Port()
			if port == "" {
				port = map[string]string{"http": "80", "https": "443"}[url.Scheme]
			}
			if n, err := strconv.Atoi(port); err == nil {
				kv = append(kv, attribute.Int("server.port", n))
			}
		}
	}
	return kv
}

func (u *upstream) close() error {
	if u.paths != nil {
		u.paths.watcher.close()
	}
	select {
	case <-u.ready:
		return u.session.Close()
	default:
		return nil
	}
}

// headerTransport adds the gateway's headers to every upstream request.
type headerTransport struct {
	base    http.RoundTripper
	headers http.Header
}

func (h *headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, vs := range h.headers {
		r.Header.Del(k)
		for _, v := range vs {
			r.Header.Add(k, v)
		}
	}
	return h.base.RoundTrip(r)
}

// errUpstreamGone is the outcome of a call to a tool its upstream no longer lists.
var errUpstreamGone = errors.New("the upstream no longer lists the tool")
