package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/export"
)

// The export: block's TLS settings reach an https endpoint that has its
// own CA and asks for a client certificate: with ca_file, cert_file and
// key_file the batch is delivered; without the client certificate, or
// without the CA, it is not; and settings that cannot apply are refused.
func TestExportSinkMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "siem-ca")
	srvCert, srvKey := ca.issue(t, dir, "siem", 2, false)
	cliCert, cliKey := ca.issue(t, dir, "rulelock", 3, true)
	crt, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	var mu sync.Mutex
	var got []string
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r.TLS.PeerCertificates[0].Subject.CommonName+" "+string(b))
		mu.Unlock()
	}))
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{crt}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	hs.StartTLS()
	defer hs.Close()

	send := func(c exportConfig) error {
		c.Timeout = duration{5 * time.Second}
		sink, closeSink, err := c.sink(func(string) string { return "" })
		if err != nil {
			return err
		}
		defer closeSink()
		return sink.Send(context.Background(), export.Batch{First: 0, N: 1, Lines: []byte("{\"index\":0}\n")})
	}
	if err := send(exportConfig{To: hs.URL, CAFile: ca.pem, CertFile: cliCert, KeyFile: cliKey}); err != nil {
		t.Fatalf("with the CA and the client certificate: %v", err)
	}
	mu.Lock()
	if len(got) != 1 || got[0] != "rulelock {\"index\":0}\n" {
		t.Errorf("the endpoint got %q, want one batch from the client certificate rulelock", got)
	}
	mu.Unlock()
	if err := send(exportConfig{To: hs.URL, CAFile: ca.pem}); err == nil {
		t.Error("without a client certificate: delivered, want refused by the endpoint")
	}
	if err := send(exportConfig{To: hs.URL, CertFile: cliCert, KeyFile: cliKey}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA (system roots): got %v, want a certificate error", err)
	}
	for _, bad := range []exportConfig{
		{To: hs.URL, CAFile: ca.pem, CertFile: cliCert},                                // no key
		{To: strings.Replace(hs.URL, "https:", "http:", 1), CAFile: ca.pem},            // TLS settings for plain HTTP
		{To: "file:" + dir + "/out.jsonl", CAFile: ca.pem},                             // TLS settings for a file
		{To: hs.URL, CAFile: dir + "/missing.pem", CertFile: cliCert, KeyFile: cliKey}, // no such CA file
	} {
		if _, _, err := bad.sink(func(string) string { return "" }); err == nil {
			t.Errorf("%+v: accepted, want refused", bad)
		}
	}
}

// The commented export: block of examples/rulelock.yaml, uncommented, is
// a valid config that names every key of exportConfig.
func TestExampleExportBlock(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "rulelock.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var block []string
	for _, l := range strings.Split(string(b), "\n") {
		if l == "# export:" {
			block = append(block, "export:")
		} else if len(block) > 0 && strings.HasPrefix(l, "#   ") {
			block = append(block, strings.TrimPrefix(l, "# "))
		} else if len(block) > 0 {
			break
		}
	}
	if len(block) == 0 {
		t.Fatal("examples/rulelock.yaml has no commented export: block")
	}
	path := filepath.Join(t.TempDir(), "rulelock.yaml")
	writeFile(t, path, "policy: p\n"+strings.Join(block, "\n")+"\n")
	c, err := readConfig(path)
	if err != nil {
		t.Fatalf("the uncommented export: block: %v", err)
	}
	if c.Export == nil || c.Export.CAFile == "" || c.Export.KeyFile == "" {
		t.Fatalf("the uncommented export: block reads as %+v", c.Export)
	}
	typ := reflect.TypeOf(exportConfig{})
	for i := range typ.NumField() {
		if key := typ.Field(i).Tag.Get("yaml"); key != "" && !slices.ContainsFunc(block, func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), key+":") }) {
			t.Errorf("the example's export: block does not show %s", key)
		}
	}
}
