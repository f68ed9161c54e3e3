package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string // path of its PEM certificate
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	path := filepath.Join(dir, name+".pem")
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	return &testCA{cert: cert, key: key, pem: path}
}

// issue writes a certificate for 127.0.0.1 (server) or a client, signed
// by ca, with the given serial, and returns the paths of its PEM
// certificate and key.
func (ca *testCA) issue(t *testing.T, dir, name string, serial int64, client bool) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	if client {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// tlsClient trusts only ca's certificates and presents cert (if any).
func tlsClient(ca *testCA, cert ...tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: cert}}}
}

func decideWith(c *http.Client, url, token string) (int, string, error) {
	req, _ := http.NewRequest("POST", url+"/v1/decide", strings.NewReader(`{"action":{"type":"transfer","amount":5,"to":"acct-1"}}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// startTLS starts the development gateway with tls and returns its
// https URL and the dev agent's token.
func startTLS(t *testing.T, data string, tc tlsConfig, agents ...agentConfig) (g *running, url, token string, stderr *syncBuffer) {
	t.Helper()
	stderr = &syncBuffer{} // the test reloads from its own goroutine
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: stderr, getenv: func(string) string { return "" }}
	cfg := devConfig(data)
	cfg.TLS, cfg.Agents = tc, agents
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	g, stop := runServing(t, e, cfg, false)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	tok, err := os.ReadFile(filepath.Join(data, "agent.token"))
	if err != nil && len(agents) == 0 {
		t.Fatal(err)
	}
	return g, "https://" + g.ln.Addr().String(), string(tok), stderr
}

// TestServeTLS: with tls configured the API is served over TLS only, to
// clients that trust its CA; a renewed certificate is served after SIGHUP's
// reload, and a broken one leaves the current one in place.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	certFile, keyFile := ca.issue(t, dir, "server", 2, false)
	g, url, token, stderr := startTLS(t, filepath.Join(dir, "data"), tlsConfig{CertFile: certFile, KeyFile: keyFile})

	c := tlsClient(ca)
	status, body, err := decideWith(c, url, token)
	if err != nil || status != 200 || !strings.Contains(body, `"decision":"allow"`) {
		t.Fatalf("decide over TLS: %d %s %v", status, body, err)
	}
	// Plaintext HTTP to the TLS port reaches no handler.
	status, body, err = decideWith(http.DefaultClient, "http://"+g.ln.Addr().String(), token)
	if err == nil && (status != http.StatusBadRequest || strings.Contains(body, "decision")) {
		t.Fatalf("plaintext request to the TLS port: %d %s", status, body)
	}
	// A client that does not trust the CA does not connect.
	other := newTestCA(t, dir, "other")
	if _, _, err := decideWith(tlsClient(other), url, token); err == nil {
		t.Fatal("a client trusting another CA connected")
	}
	// HTTP/2 is not offered.
	resp, err := c.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 1 || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("protocol %s, TLS %v", resp.Proto, resp.TLS)
	}

	served := func() int64 {
		t.Helper()
		c := tlsClient(ca)
		c.Transport.(*http.Transport).DisableKeepAlives = true
		resp, err := c.Get(url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	// Renewal: new files, then the reload SIGHUP triggers.
	newCert, newKey := ca.issue(t, dir, "server-renewed", 3, false)
	os.Rename(newCert, certFile)
	os.Rename(newKey, keyFile)
	g.reloadTLS()
	if s := served(); s != 3 {
		t.Fatalf("after the reload the gateway serves certificate %d, want 3", s)
	}
	os.WriteFile(keyFile, []byte("not a key"), 0o600)
	g.reloadTLS()
	if s := served(); s != 3 {
		t.Fatalf("after a failed reload the gateway serves certificate %d, want 3 (the current one)", s)
	}
	if !strings.Contains(stderr.String(), "TLS files not reloaded, the current ones stay") {
		t.Fatalf("a failed reload is not reported:\n%s", stderr.String())
	}
}

// TestServeMutualTLS: with client_ca_file a client without a certificate
// from that CA is refused before any request is read, token or not.
func TestServeMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	clients := newTestCA(t, dir, "clients")
	certFile, keyFile := ca.issue(t, dir, "server", 2, false)
	g, url, token, _ := startTLS(t, filepath.Join(dir, "data"), tlsConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFile: clients.pem})

	if status, body, err := decideWith(tlsClient(ca), url, token); err == nil {
		t.Fatalf("a client without a certificate got %d %s", status, body)
	}
	stranger := newTestCA(t, dir, "stranger")
	sc, sk := stranger.issue(t, dir, "stranger-client", 5, true)
	scert, _ := tls.LoadX509KeyPair(sc, sk)
	if status, body, err := decideWith(tlsClient(ca, scert), url, token); err == nil {
		t.Fatalf("a client with a certificate from another CA got %d %s", status, body)
	}
	cc, ck := clients.issue(t, dir, "agent-client", 6, true)
	ccert, _ := tls.LoadX509KeyPair(cc, ck)
	status, body, err := decideWith(tlsClient(ca, ccert), url, token)
	if err != nil || status != 200 || !strings.Contains(body, `"decision":"allow"`) {
		t.Fatalf("decide with a client certificate: %d %s %v", status, body, err)
	}
	// The certificate is a gate, not an identity: without a token, 401.
	status, _, err = decideWith(tlsClient(ca, ccert), url, "")
	if err != nil || status != http.StatusUnauthorized {
		t.Fatalf("client certificate without a token: %d %v", status, err)
	}

	// The approvers' CLI: --tls-ca and the client certificate.
	approverTok := filepath.Join(dir, "data", "approvers", "alice.token")
	var out, errOut bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}
	args := []string{"pending", "--gateway", url, "--token-file", approverTok, "--tls-ca", ca.pem, "--tls-cert", cc, "--tls-key", ck}
	if code := run(context.Background(), e, args); code != 0 || !strings.Contains(out.String(), "no requests are waiting") {
		t.Fatalf("rulelock pending over mutual TLS: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), e, args[:len(args)-4]); code == 0 {
		t.Fatalf("rulelock pending without a client certificate succeeded:\n%s", out.String())
	}

	// Rotating the client CA: after SIGHUP's reload the old CA's
	// certificates are refused and the new one's accepted.
	next := newTestCA(t, dir, "clients-next")
	b, _ := os.ReadFile(next.pem)
	os.WriteFile(clients.pem, b, 0o644)
	g.reloadTLS()
	fresh := func(cert tls.Certificate) *http.Client {
		c := tlsClient(ca, cert)
		c.Transport.(*http.Transport).DisableKeepAlives = true
		return c
	}
	if status, body, err := decideWith(fresh(ccert), url, token); err == nil {
		t.Fatalf("a certificate of the rotated-out CA got %d %s", status, body)
	}
	nc, nk := next.issue(t, dir, "agent-client-next", 7, true)
	ncert, _ := tls.LoadX509KeyPair(nc, nk)
	if status, body, err := decideWith(fresh(ncert), url, token); err != nil || status != 200 {
		t.Fatalf("a certificate of the new client CA: %d %s %v", status, body, err)
	}
}

// TestServeRefusesPlaintextOffLoopback: plaintext on an address other hosts
// can reach needs tls.disable; TLS settings that do not fit together are
// refused before anything starts.
func TestServeRefusesPlaintextOffLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:8080", "gateway.example.com:8080"} {
		err := checkListen(addr, tlsConfig{})
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "not a loopback address") {
			t.Errorf("listen %s without TLS: %v", addr, err)
		}
		if err := checkListen(addr, tlsConfig{Disable: true}); err != nil {
			t.Errorf("listen %s with tls.disable: %v", addr, err)
		}
		if err := checkListen(addr, tlsConfig{CertFile: "c", KeyFile: "k"}); err != nil {
			t.Errorf("listen %s with TLS: %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.2:0", "[::1]:8080", "localhost:8080"} {
		if err := checkListen(addr, tlsConfig{}); err != nil {
			t.Errorf("listen %s: %v", addr, err)
		}
	}

	dir := t.TempDir()
	var stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
	cfg := devConfig(filepath.Join(dir, "data"))
	cfg.Listen = "0.0.0.0:0"
	if g, err := startGateway(context.Background(), e, cfg, false); err == nil {
		g.ln.Close()
		t.Fatal("the gateway started in plaintext on 0.0.0.0")
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused start created its data directory: %v", err)
	}

	for _, c := range []struct {
		yaml, want string
	}{
		{"tls:\n  cert_file: a.crt\n", "both cert_file and key_file"},
		{"tls:\n  key_file: a.key\n", "both cert_file and key_file"},
		{"tls:\n  client_ca_file: ca.pem\n", "client_ca_file needs"},
		{"tls:\n  disable: true\n  cert_file: a.crt\n  key_file: a.key\n", "exclude each other"},
		{"tls:\n  cert: a.crt\n", "field cert not found"},
	} {
		path := filepath.Join(dir, "c.yaml")
		os.WriteFile(path, []byte("policy: ../../examples/payments\n"+c.yaml), 0o644)
		if _, err := readConfig(path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error with %q", c.yaml, err, c.want)
		}
	}
	// Files that do not hold a certificate and key: refused at start.
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("no"), 0o600)
	cfg = devConfig(filepath.Join(dir, "data2"))
	cfg.TLS = tlsConfig{CertFile: bad, KeyFile: bad}
	if g, err := startGateway(context.Background(), e, cfg, false); err == nil || !strings.Contains(err.Error(), "invalid config: tls") {
		if g != nil {
			g.ln.Close()
		}
		t.Fatalf("start with a bad certificate: %v", err)
	}
}

// TestApproverCLIRefusesPlaintextOffLoopback: the approvers' commands do
// not send a token over plaintext HTTP to another host.
func TestApproverCLIRefusesPlaintextOffLoopback(t *testing.T) {
	for _, u := range []string{"http://gateway.example.com:8080", "http://192.0.2.1:8080", "http://[2001:db8::1]:8080", "ftp://127.0.0.1", "127.0.0.1:8080"} {
		var out, errOut bytes.Buffer
		e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(k string) string {
			if k == "RULELOCK_TOKEN" {
				return "approver-token"
			}
			return ""
		}}
		if code := run(context.Background(), e, []string{"pending", "--gateway", u}); code != 2 {
			t.Errorf("pending --gateway %s: exit %d, want 2\n%s", u, code, errOut.String())
		}
	}
	for _, u := range []string{"https://gateway.example.com", "http://127.0.0.1:8080", "http://[::1]:8080", "http://localhost:8080"} {
		if err := checkGatewayURL(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
}

// TestServeCertBoundTokens: an agent whose token is bound to its client
// certificate (client_cert_sha256) is authenticated only on a connection
// that presented that certificate; another certificate of the same CA,
// valid for the handshake, does not carry the token. An unbound agent is
// unaffected.
func TestServeCertBoundTokens(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	clients := newTestCA(t, dir, "clients")
	certFile, keyFile := ca.issue(t, dir, "server", 2, false)
	ac, ak := clients.issue(t, dir, "bound-client", 3, true)
	bc, bk := clients.issue(t, dir, "other-client", 4, true)
	acert, _ := tls.LoadX509KeyPair(ac, ak)
	bcert, _ := tls.LoadX509KeyPair(bc, bk)
	fp := sha256.Sum256(acert.Certificate[0])
	hexHash := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	agents := []agentConfig{
		{ID: "agent-bound", Roles: []string{"payments"}, TokenSHA256: hexHash("tok-bound"), ClientCertSHA256: hex.EncodeToString(fp[:])},
		{ID: "agent-free", Roles: []string{"payments"}, TokenSHA256: hexHash("tok-free")},
	}
	_, url, _, _ := startTLS(t, filepath.Join(dir, "data"), tlsConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFile: clients.pem}, agents...)

	for _, c := range []struct {
		token string
		cert  tls.Certificate
		want  int
	}{
		{"tok-bound", acert, 200},
		{"tok-bound", bcert, http.StatusUnauthorized},
		{"tok-free", bcert, 200},
		{"tok-free", acert, 200},
	} {
		status, body, err := decideWith(tlsClient(ca, c.cert), url, c.token)
		if err != nil || status != c.want || status == 200 && !strings.Contains(body, `"decision"`) {
			t.Errorf("%s with certificate %s: %d %s %v, want %d", c.token, c.cert.Leaf.Subject.CommonName, status, body, err, c.want)
		}
	}

	for _, c := range []struct {
		yaml, want string
	}{
		{"agents:\n  - id: a\n    token_sha256: " + hexHash("x") + "\n    client_cert_sha256: " + hex.EncodeToString(fp[:]) + "\n", "needs mutual TLS"},
		{"tls:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\nagents:\n  - id: a\n    token_sha256: " + hexHash("x") + "\n    client_cert_sha256: abc\n", "64 hex digits"},
		{"tls:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\napprovers:\n  - id: b\n    key: k\n    client_cert_sha256: " + hex.EncodeToString(fp[:]) + "\n", "no token_sha256"},
	} {
		path := filepath.Join(dir, "c.yaml")
		os.WriteFile(path, []byte("policy: ../../examples/payments\n"+c.yaml), 0o644)
		if _, err := readConfig(path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error with %q", c.yaml, err, c.want)
		}
	}
}
