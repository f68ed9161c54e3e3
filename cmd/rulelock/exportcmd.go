package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rulelock/rulelock/internal/export"
)

func exportCommands() []command {
	return []command{
		{"export", "stream the audit log's entries as JSON lines to an HTTP endpoint or a file", runExport},
	}
}

// exportConfig is the serve config's export: block: the gateway runs the
// exporter in-process, reading its own log (never in the decision path).
type exportConfig struct {
	To        string   `yaml:"to"`         // https://... or file:PATH
	Cursor    string   `yaml:"cursor"`     // default DATA/export.cursor
	BatchSize int      `yaml:"batch_size"` // default 2000
	TokenEnv  string   `yaml:"token_env"`  // a variable holding a bearer token for the endpoint
	Timeout   duration `yaml:"timeout"`    // per attempt (default 30s)
	// TLS to an https endpoint: CAFile (PEM) replaces the system's roots;
	// CertFile and KeyFile are the client certificate an endpoint with
	// mutual TLS asks for (both or neither).
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`

	poll time.Duration // from the command line
	once bool
}

// runExport implements `rulelock export`.
func runExport(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "export", "--to URL|file:PATH [--data DIR] [--cursor FILE] [--batch N] [--poll D] [--metrics ADDR] [--once] [--tls-ca FILE] [--tls-cert FILE --tls-key FILE]")
	data := fs.String("data", "rulelock-data", "the gateway's data `directory` (its log is DIR/log)")
	to := fs.String("to", "", "where to send: an http(s) `URL` (POST, JSON lines) or file:PATH (appended, fsynced)")
	cursor := fs.String("cursor", "", "the cursor `file`: the next entry to send, written after each acknowledged batch (default DIR/export.cursor)")
	batch := fs.Int("batch", 2000, "at most `n` entries per batch")
	poll := fs.Duration("poll", time.Second, "how often to look for new entries")
	metrics := fs.String("metrics", "", "serve the exporter's Prometheus metrics on this `address` (/metrics)")
	once := fs.Bool("once", false, "exit once every entry the log holds now is acknowledged")
	tokenEnv := fs.String("token-env", "", "send Authorization: Bearer $`VAR` to the endpoint")
	caFile := fs.String("tls-ca", "", "PEM `file` of the CA(s) that issued the endpoint's TLS certificate (instead of the system's)")
	certFile := fs.String("tls-cert", "", "PEM client certificate `file`, for an endpoint that requires one")
	keyFile := fs.String("tls-key", "", "PEM private key `file` of --tls-cert")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *to == "" || fs.NArg() != 0 {
		return usageError("want --to URL|file:PATH")
	}
	cfg := exportConfig{To: *to, Cursor: *cursor, BatchSize: *batch, TokenEnv: *tokenEnv, poll: *poll, once: *once,
		CAFile: *caFile, CertFile: *certFile, KeyFile: *keyFile}
	logDir := filepath.Join(*data, "log")
	logger := slog.New(slog.NewTextHandler(e.stderr, nil))
	x, closeSink, err := cfg.exporter(e.getenv, *data, export.Follow(logDir), logger)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	defer closeSink()
	if *metrics != "" {
		stop, err := serveExportMetrics(*metrics, x)
		if err != nil {
			return err
		}
		defer stop()
	}
	if err := x.Run(ctx); err != nil {
		return err
	}
	st := x.Stats()
	fmt.Fprintf(e.stderr, "rulelock: exported entries [0, %d) to %s; %d failed attempts retried\n", st.Exported, redactURL(*to), st.Failures)
	return nil
}

// exporter builds the exporter the config describes.
func (c *exportConfig) exporter(getenv func(string) string, dataDir string, open func(int64) (export.Source, error), logger *slog.Logger) (*export.Exporter, func(), error) {
	sink, closeSink, err := c.sink(getenv)
	if err != nil {
		return nil, nil, err
	}
	cursor := c.Cursor
	if cursor == "" {
		cursor = filepath.Join(dataDir, "export.cursor")
	}
	x, err := export.New(export.Options{Open: open, Sink: sink, Cursor: cursor, BatchSize: c.BatchSize, Logger: logger,
		Poll: c.poll, StopAtEnd: c.once})
	if err != nil {
		closeSink()
		return nil, nil, err
	}
	return x, closeSink, nil
}

func (c *exportConfig) sink(getenv func(string) string) (export.Sink, func(), error) {
	if path, ok := strings.CutPrefix(c.To, "file:"); ok {
		if path == "" {
			return nil, nil, errors.New("export: file: needs a path")
		}
		if c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" {
			return nil, nil, errors.New("export: ca_file, cert_file and key_file are for an https endpoint, not a file")
		}
		f := &export.File{Path: path}
		return f, func() { f.Close() }, nil
	}
	u, err := url.Parse(c.To)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, nil, fmt.Errorf("export: to %q: want an http(s) URL or file:PATH", redactURL(c.To))
	}
	h := &export.HTTP{URL: c.To, Header: http.Header{}, Timeout: c.Timeout.Duration}
	if c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" {
		if u.Scheme != "https" {
			return nil, nil, fmt.Errorf("export: ca_file, cert_file and key_file need an https endpoint, not %q", redactURL(c.To))
		}
		if (c.CertFile == "") != (c.KeyFile == "") {
			return nil, nil, errors.New("export: give both cert_file and key_file (--tls-cert and --tls-key), or neither")
		}
		tc, err := clientTLS(c.CAFile, c.CertFile, c.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("export: %w", err)
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = tc
		h.Client = &http.Client{Transport: t}
	}
	if c.TokenEnv != "" {
		tok := getenv(c.TokenEnv)
		if tok == "" {
			return nil, nil, fmt.Errorf("export: token_env %s is empty", c.TokenEnv)
		}
		h.Header.Set("Authorization", "Bearer "+tok)
	}
	return h, func() {}, nil
}

// redactURL drops credentials from a URL before it is printed.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}

// serveExportMetrics serves the exporter's metrics on addr.
func serveExportMetrics(addr string, x *export.Exporter) (func(), error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(x.Collector())
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("export: metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}
