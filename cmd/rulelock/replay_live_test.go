package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReplayLiveLog replays and verifies the log of a running gateway,
// which holds the log's lock: both read it without the lock, and replay
// reports the same as on the log once the gateway has stopped.
func TestReplayLiveLog(t *testing.T) {
	data := t.TempDir()
	url, token, stop := testServe(t, data)
	running := true
	defer func() {
		if running {
			stop()
		}
	}()
	for _, body := range []string{
		`{"action": {"type": "transfer", "amount": 500, "to": "acct-1"}}`,
		`{"action": {"type": "transfer", "amount": 20000, "to": "acct-2"}}`,
		`{"action": {"type": "verify_counterparty", "counterparty": "acme"}}`,
	} {
		post(t, url, token, body)
	}
	cand := filepath.Join(t.TempDir(), "strict.rules")
	os.WriteFile(cand, []byte(`policy "strict" {
  default: deny
}
rule "SmallTransfersOnly" {
  precondition: action.type == "transfer"
  condition: action.amount <= 1000
  allow
}
`), 0o644)
	logDir := filepath.Join(data, "log")
	replayArgs := []string{"replay", "--log", logDir, "--policy", cand}
	live := cli(t, data, replayArgs...)
	if !strings.Contains(live, "replayed 3 decisions") || !strings.Contains(live, "1 unchanged, 2 would change") {
		t.Errorf("replay of the live log:\n%s", live)
	}
	verified := cli(t, data, "verify", logDir, "--key", filepath.Join(data, "log.pub"), "--replay", "--allow-development")
	if !strings.Contains(verified, "3 decisions replayed, 0 findings") {
		t.Errorf("verify --replay of the live log:\n%s", verified)
	}
	running = false
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if stopped := cli(t, data, replayArgs...); stopped != live {
		t.Errorf("replay of the live log:\n%s\nof the stopped log:\n%s", live, stopped)
	}
}
