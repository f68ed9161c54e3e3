package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// TestServeNotifies: rulelock serve with notifications posts a parked
// request to its group's webhook, with the console link and the header
// from the environment, shows it in /metrics, and never prints the
// webhook's URL or header.
func TestServeNotifies(t *testing.T) {
	got := make(chan []byte, 10)
	auth := make(chan string, 10)
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/hooks/secret-path" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		b, _ := io.ReadAll(r.Body)
		auth <- r.Header.Get("Authorization")
		got <- b
	}))
	defer rc.Close()
	data := t.TempDir()
	stderr := &syncBuffer{}
	vars := map[string]string{"HOOK_URL": rc.URL + "/hooks/secret-path", "HOOK_TOKEN": "header-secret"}
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: stderr, getenv: func(k string) string { return vars[k] }}
	cfg := devConfig(data)
	cfg.Notifications = notificationsConfig{ConsoleURL: "https://console.example/", Groups: map[string]notifyGroupConfig{
		"treasury": {URL: headerSource{Env: "HOOK_URL"}, Format: "json",
			Headers: map[string]headerSource{"Authorization": {Env: "HOOK_TOKEN", Prefix: "Bearer "}}},
	}}
	g, stop := runServing(t, e, cfg, true)
	url := "http://" + g.ln.Addr().String()
	waitReady(t, url)
	tok, err := os.ReadFile(filepath.Join(data, "agent.token"))
	if err != nil {
		t.Fatal(err)
	}
	res := post(t, url, string(tok), `{"action": {"type": "trade", "amount": 750000, "counterparty": "acme"}, "instruction": "settle <!channel>"}`)
	if decisionOf(res) != "require_approval" {
		t.Fatalf("got %v, want parked", res)
	}
	id, _ := res["request_id"].(string)
	var body []byte
	select {
	case body = <-got:
	case <-time.After(time.Minute):
		t.Fatal("no notification")
	}
	if a := <-auth; a != "Bearer header-secret" {
		t.Errorf("got Authorization %q", a)
	}
	var m struct {
		Group    string
		Requests []struct{ ID, URL string }
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	if m.Group != "treasury" || len(m.Requests) != 1 || m.Requests[0].ID != id || m.Requests[0].URL != "https://console.example/console/requests/"+id {
		t.Errorf("got %s, want %s linked in the console", body, id)
	}
	if strings.Contains(string(body), "settle") || strings.Contains(string(body), "750000") {
		t.Errorf("got %s: the notification carries the agent's instruction or the action's fields", body)
	}
	req, _ := http.NewRequest("GET", url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+string(tok))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `rulelock_notify_queue_depth{group="treasury"}`) {
		t.Errorf("/metrics lacks the notification metrics:\n%s", metrics)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"secret-path", "header-secret", rc.URL} {
		if strings.Contains(stderr.String(), secret) {
			t.Errorf("stderr shows %q:\n%s", secret, stderr)
		}
	}
}

// TestNotificationsConfigRefused: a group no approver is in, a missing
// console URL and an unknown format stop the gateway before it starts.
func TestNotificationsConfigRefused(t *testing.T) {
	approvers := []approverConfig{{ID: "alice", Groups: []string{"treasury"}}}
	hook := headerSource{Env: "HOOK"}
	for _, tc := range []struct {
		c    notificationsConfig
		want string
	}{
		{notificationsConfig{ConsoleURL: "https://c.example", Groups: map[string]notifyGroupConfig{"tresury": {URL: hook}}}, "no approver"},
		{notificationsConfig{Groups: map[string]notifyGroupConfig{"treasury": {URL: hook}}}, "console_url"},
		{notificationsConfig{ConsoleURL: "https://c.example", Groups: map[string]notifyGroupConfig{"treasury": {URL: hook, Format: "teams"}}}, "format"},
		{notificationsConfig{ConsoleURL: "https://c.example", Groups: map[string]notifyGroupConfig{"treasury": {}}}, "exactly one"},
	} {
		if err := tc.c.validate(approvers); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want an error about %s", tc.c, err, tc.want)
		}
	}
}

// TestNotificationsDocs: the configuration docs/approvals.md shows under
// "Notifications" is one the gateway accepts.
func TestNotificationsDocs(t *testing.T) {
	doc, err := os.ReadFile("../../docs/approvals.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(doc), "## Notifications\n")
	if !ok {
		t.Fatal("docs/approvals.md has no Notifications section")
	}
	_, block, _ := strings.Cut(sec, "```yaml\n")
	block, _, _ = strings.Cut(block, "```")
	var c struct {
		Notifications notificationsConfig `yaml:"notifications"`
	}
	dec := yaml.NewDecoder(strings.NewReader(block))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("%v:\n%s", err, block)
	}
	approvers := []approverConfig{{ID: "alice", Groups: []string{"treasury", "payments-approvers"}}}
	if err := c.Notifications.validate(approvers); err != nil || len(c.Notifications.Groups) != 2 {
		t.Fatalf("got %+v, %v", c.Notifications, err)
	}
}
