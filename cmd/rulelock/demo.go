package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
)

// startDemo starts the demo upstream for the walk-through: a loopback HTTP
// service that performs any action (it records it) once per Idempotency-Key,
// and only for the gateway's credential.
func (g *running) startDemo() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	var mu sync.Mutex
	done := map[string]json.RawMessage{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") != "Bearer demo-upstream-credential" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error": "unauthorized"}`)
			return
		}
		key := r.Header.Get("Idempotency-Key")
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		mu.Lock()
		defer mu.Unlock()
		if prev, ok := done[key]; ok {
			w.Write(prev) // the same reply, and no second effect
			return
		}
		reply, _ := json.Marshal(map[string]any{"status": "done", "action": strings.TrimPrefix(r.URL.Path, "/actions/"), "id": key, "received": json.RawMessage(body)})
		done[key] = reply
		w.Write(reply)
	})
	g.demo = &http.Server{Handler: h}
	go g.demo.Serve(ln)
	return "http://" + ln.Addr().String(), nil
}
