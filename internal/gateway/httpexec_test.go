package gateway_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/gateway"
)

// deliveries is an upstream that records the idempotency key of every
// request it reads and the remote address it came from.
type deliveries struct {
	mu    sync.Mutex
	keys  []string
	conns map[string]bool
}

func (d *deliveries) add(r *http.Request) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.keys = append(d.keys, r.Header.Get("Idempotency-Key"))
	if d.conns == nil {
		d.conns = map[string]bool{}
	}
	d.conns[r.RemoteAddr] = true
	return len(d.keys)
}

func (d *deliveries) count(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, k := range d.keys {
		if k == key {
			n++
		}
	}
	return n
}

// TestExecutorReusesConnections: sequential executions share one
// keep-alive connection (the pooled transport), with or without a Client.
func TestExecutorReusesConnections(t *testing.T) {
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"no client", nil}, {"client without transport", &http.Client{Timeout: 5 * time.Second}}} {
		t.Run(c.name, func(t *testing.T) {
			var d deliveries
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				d.add(r)
				io.WriteString(w, `{"ok": true}`)
			}))
			defer srv.Close()
			ex := &gateway.HTTPExecutor{Method: "POST", URL: srv.URL + "/pay", Client: c.client}
			for i := range 20 {
				out := ex.Execute(context.Background(), gateway.Execution{RequestID: "r" + string(rune('a'+i)), Action: action(t, `{"type": "transfer", "to": "x"}`)})
				if out.Status != gateway.StatusOK {
					t.Fatalf("execution %d: %+v", i, out)
				}
			}
			if len(d.conns) != 1 {
				t.Errorf("20 executions used %d connections, want 1", len(d.conns))
			}
		})
	}
}

// TestExecutorNeverResends: when a reused connection breaks after the
// request was written, net/http would resend a request that carries an
// Idempotency-Key on a new connection; the executor refuses, so the
// upstream sees the action once and the outcome is unknown.
func TestExecutorNeverResends(t *testing.T) {
	var d deliveries
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if d.add(r) == 2 {
			// Read the second request, then hang up without replying.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.(*net.TCPConn).SetLinger(0)
				conn.Close()
			}
			return
		}
		io.WriteString(w, `{"ok": true}`)
	}))
	defer srv.Close()
	ex := &gateway.HTTPExecutor{Method: "POST", URL: srv.URL + "/pay"}
	a := action(t, `{"type": "transfer", "to": "x"}`)
	if out := ex.Execute(context.Background(), gateway.Execution{RequestID: "r1", Action: a}); out.Status != gateway.StatusOK {
		t.Fatalf("first: %+v", out)
	}
	out := ex.Execute(context.Background(), gateway.Execution{RequestID: "r2", Action: a})
	if out.Status != gateway.StatusUnknown {
		t.Errorf("second: got %+v, want status unknown", out)
	}
	if n := d.count("r2"); n != 1 {
		t.Errorf("the upstream received r2 %d times, want once", n)
	}
}

// TestExecutorNoRedirects: a redirect is returned, not followed, even with
// a Client whose CheckRedirect would follow it.
func TestExecutorNoRedirects(t *testing.T) {
	var d deliveries
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		d.add(r)
		if r.URL.Path == "/pay" {
			http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
		}
	}))
	defer srv.Close()
	ex := &gateway.HTTPExecutor{Method: "POST", URL: srv.URL + "/pay", Client: &http.Client{}}
	out := ex.Execute(context.Background(), gateway.Execution{RequestID: "r1", Action: action(t, `{"type": "transfer", "to": "x"}`)})
	if out.Status != gateway.StatusError || out.HTTPStatus != http.StatusTemporaryRedirect {
		t.Errorf("got %+v, want the redirect as an error", out)
	}
	if len(d.keys) != 1 {
		t.Errorf("the upstream received %d requests, want 1", len(d.keys))
	}
}
