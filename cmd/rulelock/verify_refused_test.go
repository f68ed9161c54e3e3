package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
)

// TestVerifyReplayRefusedVotes: a served gateway logs the approvals it
// refuses (here alice's approval of a request that does not exist, and
// alice approving twice), attributed to alice's token, and
// rulelock verify --replay passes on that log.
func TestVerifyReplayRefusedVotes(t *testing.T) {
	data := t.TempDir()
	url, token, stop := testServe(t, data)
	aliceToken := readTrimmed(t, filepath.Join(data, "approvers", "alice.token"))
	alice, err := note.NewSigner(readTrimmed(t, filepath.Join(data, "approvers", "alice.key")))
	if err != nil {
		t.Fatal(err)
	}
	parked := post(t, url, token, `{"action": {"type": "trade", "amount": 750000, "counterparty": "acme"}}`)
	id, _ := parked["request_id"].(string)
	status, list := getAuth(t, url+"/v1/approvals", aliceToken)
	var pending struct {
		Pending []struct {
			Statement string `json:"approve_statement"`
		} `json:"pending"`
	}
	if status != 200 || json.Unmarshal([]byte(list), &pending) != nil || len(pending.Pending) != 1 {
		t.Fatalf("approvals: %d %s", status, list)
	}
	signed, err := note.Sign(&note.Note{Text: pending.Pending[0].Statement}, alice)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"note": string(signed)})
	for _, c := range []struct {
		id     string
		status int
	}{{"no-such-request", http.StatusNotFound}, {id, http.StatusOK}, {id, http.StatusConflict}} {
		if got, out := postJSON(t, url+"/v1/requests/"+c.id+"/approvals", aliceToken, string(body)); got != c.status {
			t.Fatalf("approve %s: %d %v, want %d", c.id, got, out, c.status)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	l, err := audit.Open(filepath.Join(data, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for i := range l.Size() {
		b, _ := l.ReadEntry(i)
		e, _ := audit.DecodeEntry(b)
		if v, ok := gateway.ParseRefusedVote(e); ok && e.Approver == "alice" {
			codes = append(codes, v.Code)
		}
	}
	l.Close()
	if strings.Join(codes, " ") != "not_found duplicate_approver" {
		t.Fatalf("refused votes logged: %v, want not_found and duplicate_approver by alice", codes)
	}
	out, code, stderr := cliCode(t, data, "verify", filepath.Join(data, "log"), "--key", filepath.Join(data, "log.pub"), "--replay", "--allow-development")
	if code != 0 || !strings.Contains(out, "0 findings") {
		t.Fatalf("verify --replay: exit %d\n%s%s", code, out, stderr)
	}
}
