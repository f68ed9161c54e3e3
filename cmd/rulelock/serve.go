package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/internal/attest"
	"github.com/rulelock/rulelock/internal/fsx"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/internal/lifecycle"
	"github.com/rulelock/rulelock/internal/mcpproxy"
	"github.com/rulelock/rulelock/internal/notify"
	"github.com/rulelock/rulelock/internal/pglog"
	"github.com/rulelock/rulelock/internal/tracing"
	"github.com/rulelock/rulelock/policy"
)

func serveCommands() []command {
	return []command{
		{"serve", "run the gateway: decide, record, execute, record", runServe},
		{"token", "create an agent bearer token and print its hash for the config", runToken},
	}
}

// runServe runs the gateway until ctx is cancelled (SIGINT, SIGTERM).
func runServe(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "serve", "[--config FILE] [--bundle DIR --trust FILE | --policy DIR] [--data DIR] [--store DSN] [--listen ADDR] [--demo-upstream]")
	cfgPath := fs.String("config", "", "configuration file (YAML; see examples/rulelock.yaml)")
	policyPath := fs.String("policy", "", "policy directory (development mode: not a signed bundle)")
	bundlePath := fs.String("bundle", "", "signed policy bundle directory (rulelock bundle build/sign)")
	trustPath := fs.String("trust", "", "trust file: the keys that may sign bundles and how many must")
	dataDir := fs.String("data", "", "data directory: log, keys, state (default ./rulelock-data)")
	listen := fs.String("listen", "", "address to listen on (default 127.0.0.1:8080)")
	storeDSN := fs.String("store", "", "keep the audit log in PostgreSQL (`DSN` postgres://...), shared by replicas (docs/scale-out.md); default: the embedded log in the data directory")
	demo := fs.Bool("demo-upstream", false, "start a demo upstream on loopback and execute every action type without an executor against it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg := &serveConfig{}
	var cfgSum [32]byte
	if *cfgPath != "" {
		b, err := os.ReadFile(*cfgPath)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("invalid config: %v", err)}
		}
		c, err := parseConfig(*cfgPath, b)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("invalid config: %v", err)}
		}
		cfg, cfgSum = c, sha256.Sum256(b)
	}
	// Flags override the config; defaults fill what neither sets.
	setIf(&cfg.Policy, *policyPath)
	setIf(&cfg.Bundle, *bundlePath)
	setIf(&cfg.Trust, *trustPath)
	setIf(&cfg.DataDir, *dataDir)
	setIf(&cfg.Listen, *listen)
	setIf(&cfg.Store, *storeDSN)
	if err := cfg.defaults(); err != nil {
		return err
	}
	g, err := startGateway(ctx, e, cfg, *demo)
	if err != nil {
		return err
	}
	g.cfgPath, g.cfgSum = *cfgPath, cfgSum
	return g.serve(ctx)
}

// defaults fills what neither the flags nor the config set, and checks
// that there is exactly one source of policy.
func (cfg *serveConfig) defaults() error {
	defaultTo(&cfg.DataDir, "rulelock-data")
	defaultTo(&cfg.Listen, "127.0.0.1:8080")
	defaultTo(&cfg.Origin, "rulelock.local/log")
	if cfg.CheckpointInterval.Duration == 0 {
		cfg.CheckpointInterval.Duration = time.Second
	}
	if cfg.Log.MaxUnsigned.Duration == 0 {
		cfg.Log.MaxUnsigned.Duration = gateway.DefaultMaxUnsigned
	}
	if cfg.Log.MaxUnsigned.Duration < 2*cfg.CheckpointInterval.Duration {
		// Between two checkpoints entries wait up to an interval: a
		// shorter limit would refuse actions while signing works.
		return usageError("log.max_unsigned (%s) must be at least twice checkpoint_interval (%s)", cfg.Log.MaxUnsigned.Duration, cfg.CheckpointInterval.Duration)
	}
	switch {
	case cfg.Policy == "" && cfg.Bundle == "":
		return usageError("no policy: give --bundle DIR --trust FILE, or --policy DIR for development")
	case cfg.Policy != "" && cfg.Bundle != "":
		return usageError("give --bundle or --policy, not both")
	case cfg.Bundle != "" && cfg.Trust == "":
		return usageError("a bundle needs a trust file (--trust FILE)")
	case cfg.Store != "":
		return checkStore(cfg)
	}
	return nil
}

func setIf(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func defaultTo(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

// running is a started gateway.
type running struct {
	e     *env
	cfg   *serveConfig
	log   *audit.Log
	trust *bundle.Trust
	act   *lifecycle.Activator // every activation and rejection (activate.go)
	gw    *gateway.Gateway
	cp    *audit.Checkpointer
	srv   *http.Server
	ln    net.Listener
	creds *serverCreds // with TLS: certificate and client CAs, reloaded on SIGHUP
	ready atomic.Bool
	// rejected is why no policy is active, while none is.
	rejected atomic.Pointer[string]
	demo     *http.Server
	proxy    *mcpproxy.Proxy // nil without MCP upstreams
	signer   note.Signer     // the log's key; closed with the gateway if an io.Closer (PKCS#11)
	closed   bool
	metrics  *httpapi.Metrics
	notifier *notify.Notifier // nil without notifications.groups
	logsvc   *logServices     // counts, search index, exporter (servelog.go)

	// Who may act, replaced by a reload (reload.go).
	cfgPath  string
	cfgSum   [32]byte // the SHA-256 of the config file as read at the start
	tokens   *httpapi.TokenSet
	who      atomic.Pointer[serveConfig] // the config whose agents, approvers and auditors are in force
	reloadMu sync.Mutex
	admin    *http.Server      // the admin socket (reload.go)
	tpm      *attest.TPM       // with attestation.provider tpm (attestcmd.go)
	rec      *attest.Recorder  // nil without attestation
	tracing  *tracing.Exporter // OTLP spans, when OTEL_* asks (tracing.go)
	store    *store            // the log in PostgreSQL; nil: the embedded log (servestore.go)
}

// recorder is where the gateway records: the embedded log or the store.
func (g *running) recorder() gateway.Recorder {
	if g.store != nil {
		return g.store.state
	}
	return g.log
}

func startGateway(ctx context.Context, e *env, cfg *serveConfig, demo bool) (g *running, err error) {
	if err := checkListen(cfg.Listen, cfg.TLS); err != nil {
		return nil, err
	}
	tlsCfg, creds, err := serverTLS(cfg.TLS)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("invalid config: %v", err)}
	}
	executors, err := cfg.executors(e.getenv)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("invalid config: %v", err)}
	}
	tx, err := startTracing(ctx, e)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			stopTracing(tx)
		}
	}()
	var p *policy.Policy
	var trust *bundle.Trust
	if cfg.Bundle != "" {
		// The bundle is checked and activated once the log is open, so
		// that a rejection is logged; until then no policy is active.
		if trust, err = loadTrust(cfg.Trust); err != nil {
			return nil, &exitError{code: 2, err: err}
		}
	} else {
		if p, err = loadPolicy(cfg.Policy); err != nil {
			return nil, &exitError{code: 1, err: fmt.Errorf("load policy %s:\n%v", cfg.Policy, err)}
		}
		fmt.Fprintf(e.stderr, "rulelock: WARNING: development mode: policy loaded from %s, not from a signed bundle\n", cfg.Policy)
	}
	// The address before anything is created on disk (the log, its key,
	// tokens, approvers), and after the config is read and checked: a
	// mistake in it is named first, a busy port changes nothing.
	ln, err := listen(cfg.Listen)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			ln.Close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	g = &running{e: e, cfg: cfg, trust: trust}
	var l *audit.Log
	if cfg.Store != "" {
		if g.store, err = openStore(ctx, cfg); err != nil {
			return nil, err
		}
	} else if l, err = openLog(e, cfg.DataDir); err != nil {
		return nil, err
	}
	g.log, g.tracing = l, tx
	started := g
	defer func() {
		if err != nil {
			started.close() // g is nil by now
		}
	}()
	var checkpoints gateway.Checkpoints
	if g.store != nil {
		if err := g.storeSigner(ctx); err != nil {
			return nil, err
		}
		if err := g.storeIntegrator(); err != nil {
			return nil, err
		}
		g.metrics = httpapi.NewMetrics()
		checkpoints = g.store.in
	} else {
		if err := g.openAttestation(); err != nil {
			return nil, err
		}
		if g.cp, err = g.openCheckpointer(); err != nil {
			return nil, err
		}
		if err := g.attestAtStart(ctx); err != nil {
			return nil, err
		}
		checkpoints = g.cp
	}
	rec := g.recorder()
	var demoFor func(string) gateway.Executor
	if demo {
		url, err := g.startDemo()
		if err != nil {
			return nil, err
		}
		demoFor = func(t string) gateway.Executor {
			return &gateway.HTTPExecutor{Method: "POST", URL: url + "/actions/" + t, Headers: http.Header{"Authorization": {"Bearer demo-upstream-credential"}}}
		}
		if p != nil {
			for _, t := range p.ActionTypes() {
				if _, ok := executors[t]; !ok {
					executors[t] = demoFor(t)
				}
			}
			fmt.Fprintf(e.stderr, "rulelock: demo upstream on %s executes %s\n", url, strings.Join(p.ActionTypes(), ", "))
			demoFor = nil
		} else {
			fmt.Fprintf(e.stderr, "rulelock: demo upstream on %s executes every action type without an executor\n", url)
		}
	}
	switch {
	case len(cfg.Approvers) > 0:
	case cfg.Bundle != "":
		// Never invented beside a signed bundle: development approvers
		// would be credentials nobody configured, named like the
		// bundle's signers. Parked actions are denied instead.
		fmt.Fprintf(e.stderr, "rulelock: no approvers configured: every action the policy requires approval for is denied (no_approvers); list approvers in the config (docs/approvals.md)\n")
	case len(cfg.Agents) == 0:
		if err := devApprovers(e, cfg); err != nil {
			return nil, err
		}
	}
	reg, err := cfg.registry()
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("invalid config: %v", err)}
	}
	if g.proxy, err = startProxy(ctx, e, cfg, g); err != nil {
		return nil, err
	}
	var executorFor func(string) gateway.Executor
	var sensitive func(string) []string
	if g.proxy != nil {
		executorFor, sensitive = g.proxy.Executor, g.proxy.Sensitive
	}
	if demoFor != nil {
		executorFor = orExecutor(executorFor, demoFor)
	}
	if g.notifier, err = cfg.Notifications.notifier(e.getenv, rec, slog.New(slog.NewTextHandler(e.stderr, nil))); err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("invalid config: %v", err)}
	}
	var notifier gateway.Notifier
	if g.notifier != nil {
		notifier = notifyParked(g.notifier)
		g.metrics.Notifications(g.notifier.Stats)
	}
	var lease, execTimeout time.Duration
	var replicas gateway.Replicas
	if g.store != nil {
		lease, execTimeout, replicas = g.store.lease, g.store.execTimeout(), g.store.state
	}
	gw, err := gateway.New(gateway.Config{Policy: p, Log: rec, Replicas: replicas, Lease: lease, ExecTimeout: execTimeout, Executors: executors, Approvers: reg, ExecutorFor: executorFor, Sensitive: sensitive,
		Budget: cfg.Limits.MemoryBudget, Retention: cfg.Limits.Retention.Duration, MaxPendingPerAgent: cfg.Limits.MaxPendingPerAgent,
		Principals: cfg.principals(), Checkpoints: checkpoints, MaxUnsigned: cfg.Log.MaxUnsigned.Duration, Notify: notifier,
		UnfreezeQuorum: cfg.Freeze.UnfreezeApprovers, Attest: g.attestor(), Tracer: tx.Tracer})
	if err != nil {
		return nil, err
	}
	g.gw = gw
	if g.proxy != nil {
		g.proxy.Attach(gw)
	}
	var lr gateway.LogReader = l
	if g.store != nil {
		if lr, err = pglog.NewReader(g.store.pool).Snapshot(ctx); err != nil {
			return nil, err
		}
	}
	closed, err := gw.Rebuild(ctx, lr)
	if err != nil {
		return nil, fmt.Errorf("rebuild state from the log: %w", err)
	}
	if closed > 0 {
		fmt.Fprintf(e.stderr, "rulelock: recovery: %d allowed actions had no recorded outcome; recorded as unknown, not re-executed\n", closed)
	}
	if _, err := rec.Append(ctx, &audit.Entry{Kind: audit.KindNote, Time: time.Now().UTC(), EngineVersion: gateway.EngineVersion,
		Message: fmt.Sprintf("startup: %d allowed actions without an outcome recorded as unknown", closed)}); err != nil {
		return nil, err
	}
	if err := g.startPolicy(ctx, p); err != nil {
		return nil, err
	}
	if err := g.firstWitnessedCheckpoint(); err != nil {
		return nil, err
	}
	var logAPI httpapi.LogAPI
	if g.store != nil {
		g.openStoreLogServices() // the counts; search and export read the embedded log
		logAPI = pglog.NewAPI(g.store.pool, g.store.in)
	} else {
		if err := g.openLogServices(); err != nil {
			return nil, err
		}
		logAPI = &httpapi.AuditLog{Log: l, Checkpointer: g.cp, TilesDir: filepath.Join(cfg.DataDir, "tiles"), Index: g.logsvc.index}
	}
	tokens := cfg.tokens()
	switch {
	case len(cfg.Agents) > 0:
	case cfg.Bundle != "":
		// Never invented beside a signed bundle, like the approvers: a
		// development token would be a credential nobody configured.
		fmt.Fprintf(e.stderr, "rulelock: no agents configured: no agent can act; list agents with the token_sha256 that `rulelock token` prints in the config (examples/rulelock.yaml)\n")
	default:
		t, err := devAgent(e, cfg.DataDir)
		if err != nil {
			return nil, err
		}
		tokens = append(tokens, t)
	}
	g.tokens = httpapi.NewTokenSet(tokens)
	g.who.Store(cfg)
	g.metrics.Frozen(func() bool { return gw.Frozen().Freeze != nil })
	if f := gw.Frozen().Freeze; f != nil {
		fmt.Fprintf(e.stderr, "rulelock: FROZEN since %s by %s: %s; every new action is refused until %d approvers sign rulelock unfreeze\n",
			f.Since.Format(time.RFC3339), f.By, f.Reason, gw.Frozen().UnfreezeQuorum)
	}
	api := httpapi.New(httpapi.Config{
		Gateway: gw, TokenSet: g.tokens, MaxBody: cfg.Limits.MaxBody, Tracer: tx.Tracer,
		Log:     logAPI,
		Ready:   func() bool { return g.ready.Load() && !gw.Active().None },
		Metrics: g.metrics,
		Reason:  g.notReadyReason,
		Status: func() httpapi.Active {
			a := gw.Active()
			return httpapi.Active{Policy: a.Digest, Version: a.Version, Signers: a.Signers, DevelopmentMode: a.Dev}
		},
	})
	g.ln = ln
	var h http.Handler = api
	if g.proxy != nil || cfg.Console.enabled() {
		mux := http.NewServeMux()
		mux.Handle("/", api)
		if g.proxy != nil {
			// MCP over streamable HTTP, authenticated with the agents' tokens.
			mux.Handle("/mcp", g.proxy.HTTPHandler(httpapi.AgentAuthenticatorSet(g.tokens), 4<<20))
		}
		if cfg.Console.enabled() {
			vk, ok := g.signer.(verifierKeyer)
			if !ok {
				return nil, errors.New("console: the log's signer has no verifier key")
			}
			logKey, err := audit.ParseVerifierKey(vk.VerifierKey())
			if err != nil {
				return nil, fmt.Errorf("console: the log's verifier key: %v", err)
			}
			con, err := consoleHandler(g, reg, &httpapi.AuditLog{Log: l, Checkpointer: g.cp, TilesDir: filepath.Join(cfg.DataDir, "tiles"), Index: g.logsvc.index}, logKey)
			if err != nil {
				return nil, err
			}
			mux.Handle("/console/", con)
		}
		h = mux
	}
	g.srv = httpapi.NewHTTPServer(cfg.Listen, h)
	if tlsCfg != nil {
		g.srv.TLSConfig, g.creds = tlsCfg, creds
		g.srv.Protocols = new(http.Protocols)
		g.srv.Protocols.SetHTTP1(true) // no HTTP/2: see serverTLS
	}
	return g, nil
}

// listen takes the gateway's address; when it cannot, it says which
// address and how to choose another.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("listen %s: the address is already in use (another gateway?); choose another with --listen ADDR or listen in the config", addr)
	case err != nil:
		return nil, fmt.Errorf("listen %s: %w; choose another address with --listen ADDR or listen in the config", addr, err)
	}
	return ln, nil
}

// serve answers requests until ctx is done, then shuts down gracefully:
// in-flight requests finish, a final checkpoint is signed, the log closes.
func (g *running) serve(ctx context.Context) error {
	cpCtx, stopCP := context.WithCancel(context.Background())
	cpDone := make(chan error, 1)
	// Run returns only when stopped: failures are retried and reported
	// (stderr, /metrics, /readyz), and past log.max_unsigned the gateway
	// refuses actions until signing resumes.
	if g.store != nil {
		g.store.run(g.e, g.cfg.CheckpointInterval.Duration, g.gw.Follow)
		cpDone <- nil
	} else {
		go func() { cpDone <- g.cp.Run(cpCtx, g.cfg.CheckpointInterval.Duration) }()
	}
	expDone := make(chan struct{})
	go func() { g.gw.RunExpiry(cpCtx); close(expDone) }()
	attDone := make(chan struct{})
	go func() { g.runAttestation(cpCtx); close(attDone) }()
	g.logsvc.run(g.e, g)
	if g.cfgPath != "" {
		g.recheckAtStart(ctx) // before the first request is served (reload.go)
	}
	srvErr := make(chan error, 1)
	scheme := "http"
	if g.srv.TLSConfig != nil {
		scheme = "https"
		go func() { srvErr <- g.srv.ServeTLS(g.ln, "", "") }()
	} else {
		go func() { srvErr <- g.srv.Serve(g.ln) }()
	}
	if err := g.serveAdmin(ctx); err != nil {
		fmt.Fprintf(g.e.stderr, "rulelock: admin socket: %v; rulelock reload will not reach this gateway (SIGHUP still reloads)\n", err)
	}
	g.ready.Store(true)
	fmt.Fprintf(g.e.stderr, "rulelock: listening on %s://%s\n", scheme, g.ln.Addr())
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-srvErr:
			break loop
		case <-hup:
			g.reloadTLS()
			g.reload(ctx)
			if g.cfgPath != "" {
				g.reloadWho(ctx) // who may act (reload.go)
			}
			if g.proxy != nil {
				g.proxy.PolicyChanged() // agents see the tools the new policy may allow
			}
		}
	}
	g.ready.Store(false)
	fmt.Fprintln(g.e.stderr, "rulelock: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if serr := g.srv.Shutdown(sctx); serr != nil && err == nil {
		err = serr
	}
	if g.admin != nil {
		g.admin.Shutdown(sctx)
	}
	stopCP()
	<-cpDone
	<-expDone
	<-attDone
	g.logsvc.stop()  // before the log closes: they read it
	if g.cp != nil { // in store mode, the integrator that holds the lock signs
		if _, cerr := g.cp.Checkpoint(); cerr != nil && err == nil {
			err = fmt.Errorf("final checkpoint: %w", cerr)
		}
	}
	if cerr := g.close(); cerr != nil && err == nil {
		err = cerr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (g *running) close() error {
	if g.closed {
		return nil
	}
	g.closed = true
	if g.ln != nil {
		g.ln.Close() // already closed after a Shutdown; needed on the error paths
	}
	if g.demo != nil {
		g.demo.Close()
	}
	if g.proxy != nil {
		g.proxy.Close()
	}
	if g.notifier != nil {
		g.notifier.Close() // before the log: it appends notes
	}
	var err error
	if g.store != nil {
		err = g.store.close()
	} else if g.log != nil {
		err = g.log.Close()
	}
	stopTracing(g.tracing)
	if c, ok := g.signer.(io.Closer); ok {
		c.Close()
	}
	if g.tpm != nil {
		g.tpm.Close()
	}
	return err
}

// openCheckpointer opens the log's signing key and the checkpointer, which
// refuses a key that is not the log's (key custody), then checks log.pub.
func (g *running) openCheckpointer() (*audit.Checkpointer, error) {
	var err error
	if g.signer, err = logSigner(g.e, g.cfg, g.log); err != nil {
		return nil, err
	}
	if err := g.newRecorder(); err != nil {
		return nil, err
	}
	witnesses, err := g.cfg.Log.checkpointWitnesses()
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("invalid config: %v", err)}
	}
	g.metrics = httpapi.NewMetrics()
	cp, err := audit.NewCheckpointer(g.log, g.signer, audit.CheckpointOptions{TilesDir: filepath.Join(g.cfg.DataDir, "tiles"),
		Witnesses: witnesses, WitnessQuorum: g.cfg.Log.WitnessQuorum, OnWitnessConflict: g.witnessConflict,
		Logger: slog.New(slog.NewTextHandler(g.e.stderr, nil)), Cosigners: g.cosigners()})
	if errors.Is(err, audit.ErrWrongKey) {
		return nil, fmt.Errorf("refusing to start: %w; restore the log's key, or change keys with rulelock log rotate-key (see docs/signing-keys.md)", err)
	}
	if err != nil {
		return nil, err
	}
	if err := checkLogPub(g.e, g.cfg.DataDir, g.signer, cp.Latest() != nil); err != nil {
		return nil, err
	}
	return cp, nil
}

// devAgent returns the development agent, creating its token on first
// start. Only without configured agents: a deployment lists its agents.
func devAgent(e *env, dataDir string) (httpapi.Token, error) {
	path := filepath.Join(dataDir, "agent.token")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		var raw [24]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return httpapi.Token{}, err
		}
		b = []byte("rl_" + hex.EncodeToString(raw[:]))
		if err := writeNewFile(path, b); err != nil {
			return httpapi.Token{}, err
		}
		fmt.Fprintf(e.stderr, "rulelock: no agents configured: created the development agent \"dev-agent\" (roles: payments); its token is in %s\n", path)
	} else if err != nil {
		return httpapi.Token{}, err
	}
	return httpapi.Token{SHA256: httpapi.HashToken(strings.TrimSpace(string(b))), Agent: devAgentIdentity}, nil
}

// devAgentIdentity is the agent the development token authenticates.
var devAgentIdentity = policy.Agent{ID: "dev-agent", Roles: []string{"payments"}}

// runToken creates a bearer token for an agent.
func runToken(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "token", "")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return err
	}
	tok := "rl_" + hex.EncodeToString(raw[:])
	sum := httpapi.HashToken(tok)
	fmt.Fprintf(e.stdout, "token: %s\ntoken_sha256: %s\n", tok, hex.EncodeToString(sum[:]))
	return nil
}

// devApprovers creates, in development mode only, two approvers with keys
// and API tokens in <data>/approvers/, so that the walk-through can show a
// two-person approval on one machine. A deployment lists its approvers.
func devApprovers(e *env, cfg *serveConfig) error {
	dir := filepath.Join(cfg.DataDir, "approvers")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	created := false
	for _, id := range []string{"alice", "bob"} {
		keyPath, pubPath, tokPath := filepath.Join(dir, id+".key"), filepath.Join(dir, id+".pub"), filepath.Join(dir, id+".token")
		if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
			skey, vkey, err := note.GenerateKey(rand.Reader, id)
			if err != nil {
				return err
			}
			if err := writeNewFile(keyPath, []byte(skey+"\n")); err != nil {
				return err
			}
			if err := fsx.WriteFileAtomic(pubPath, []byte(vkey+"\n"), 0o644); err != nil {
				return err
			}
			var raw [24]byte
			rand.Read(raw[:])
			if err := writeNewFile(tokPath, []byte("rl_"+hex.EncodeToString(raw[:]))); err != nil {
				return err
			}
			created = true
		}
		pub, err := os.ReadFile(pubPath)
		if err != nil {
			return err
		}
		tok, err := os.ReadFile(tokPath)
		if err != nil {
			return err
		}
		sum := httpapi.HashToken(strings.TrimSpace(string(tok)))
		cfg.Approvers = append(cfg.Approvers, approverConfig{
			ID: id, Groups: devApproverGroups,
			Key: strings.TrimSpace(string(pub)), TokenSHA256: hex.EncodeToString(sum[:]),
		})
	}
	if created {
		fmt.Fprintf(e.stderr, "rulelock: no approvers configured: created the development approvers alice and bob (groups payments-approvers, treasury); keys and tokens in %s\n", dir)
	}
	return nil
}

// devApproverGroups are the development approvers' groups.
var devApproverGroups = []string{"payments-approvers", "treasury"}
