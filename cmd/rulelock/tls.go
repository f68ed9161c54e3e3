package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync/atomic"
)

// tlsConfig is the API listener's TLS (config key tls). Without it the
// gateway speaks plaintext HTTP, which it does only on a loopback address
// unless told that a TLS-terminating proxy fronts it (disable): agents'
// and approvers' bearer tokens must not cross a network in the clear.
type tlsConfig struct {
	CertFile string `yaml:"cert_file"` // PEM: the server's certificate chain
	KeyFile  string `yaml:"key_file"`  // PEM: its private key
	// ClientCAFile (PEM), if set, makes every client present a certificate
	// issued by one of these CAs (mutual TLS), before any request is read.
	// It is a gate in front of the bearer tokens, not an identity: the
	// agent is still the one its token names.
	ClientCAFile string `yaml:"client_ca_file"`
	// Disable allows plaintext on a non-loopback address, for a gateway
	// behind a TLS-terminating proxy on the same host or pod.
	Disable bool `yaml:"disable"`
}

func (t tlsConfig) validate() error {
	switch {
	case t.Disable && (t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != ""):
		return errors.New("tls: disable and certificate files exclude each other")
	case (t.CertFile == "") != (t.KeyFile == ""):
		return errors.New("tls: give both cert_file and key_file")
	case t.ClientCAFile != "" && t.CertFile == "":
		return errors.New("tls: client_ca_file needs cert_file and key_file")
	}
	return nil
}

// checkListen refuses plaintext HTTP on an address other hosts can reach.
func checkListen(addr string, t tlsConfig) error {
	if t.CertFile != "" || t.Disable {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usageError("listen %q: %v", addr, err)
	}
	if loopbackHost(host) {
		return nil
	}
	return usageError("listen %s is not a loopback address and the API would be plaintext, "+
		"with bearer tokens in the clear: configure tls (cert_file, key_file), "+
		"or set tls.disable: true if a TLS-terminating proxy on this host fronts the gateway", addr)
}

// loopbackHost reports whether host is a loopback address, or a name all
// of whose addresses are: a name that does not resolve, or resolves to any
// other address, is not (so a "localhost" mapped elsewhere fails closed).
func loopbackHost(host string) bool {
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	if host == "" {
		return false // every interface
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// checkGatewayURL refuses to send an approver's token in the clear: a
// gateway URL is https, or http on a loopback address (the rule the
// gateway applies to its own listener).
func checkGatewayURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return usageError("--gateway %q is not an http(s) URL", raw)
	}
	if u.Scheme == "https" {
		return nil
	}
	if loopbackHost(u.Hostname()) {
		return nil
	}
	return usageError("--gateway %s: plaintext HTTP to another host would send the token in the clear; use https", raw)
}

// serverCreds are the listener's certificate and client CAs, which SIGHUP
// reloads from their files (a renewed certificate or a rotated client CA
// needs no restart).
type serverCreds struct {
	files tlsConfig
	cur   atomic.Pointer[tls.Config] // what a handshake uses
}

// load reads the files into a new configuration; on error the current one
// stays.
func (c *serverCreds) load() error {
	crt, err := tls.LoadX509KeyPair(c.files.CertFile, c.files.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}, Certificates: []tls.Certificate{crt}}
	if c.files.ClientCAFile != "" {
		pool, err := certPool(c.files.ClientCAFile)
		if err != nil {
			return err
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	c.cur.Store(cfg)
	return nil
}

// serverTLS returns the listener's TLS configuration, or nil for
// plaintext. TLS 1.2 at least; HTTP/1.1 only (the server turns HTTP/2 off),
// so that every request goes through the one parser the API's confusion
// and limit tests cover. Each handshake takes the configuration current
// at that moment.
func serverTLS(t tlsConfig) (*tls.Config, *serverCreds, error) {
	if t.CertFile == "" {
		return nil, nil, nil
	}
	c := &serverCreds{files: t}
	if err := c.load(); err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return c.cur.Load(), nil
	}}
	return cfg, c, nil
}

// certPool reads the PEM certificates of path.
func certPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls: no PEM certificate in %s", path)
	}
	return pool, nil
}

// clientTLS returns the TLS configuration of the CLI's client of a
// gateway: caFile (PEM) replaces the system's roots when given; certFile
// and keyFile are the client certificate a gateway with client_ca_file
// asks for. nil when none is given.
func clientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := certPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, usageError("give both --tls-cert and --tls-key")
	}
	if certFile != "" {
		crt, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		cfg.Certificates = []tls.Certificate{crt}
	}
	return cfg, nil
}

// reloadTLS reloads the certificate, its key and the client CAs from their
// files (SIGHUP); if any of them is not valid, the current ones stay.
func (g *running) reloadTLS() {
	if g.creds == nil {
		return
	}
	if err := g.creds.load(); err != nil {
		fmt.Fprintf(g.e.stderr, "rulelock: TLS files not reloaded, the current ones stay: %v\n", err)
		return
	}
	fmt.Fprintf(g.e.stderr, "rulelock: TLS certificate and client CAs reloaded from %s\n", g.creds.files.CertFile)
}
