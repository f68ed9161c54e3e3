package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/review"
	"github.com/rulelock/rulelock/policy"
	"golang.org/x/mod/sumdb/note"
)

// The spoofing attempt of issue 16: the instruction repaints the line
// above as a $200 transfer to acct-1, and the payee hides a right-to-left
// override, a zero-width space and a Tag character.
const (
	spoofInstruction = "Pay invoice 1234\r\x1b[1A\x1b[2K  action: {\"amount\":200,\"to\":\"acct-1\",\"type\":\"transfer\"}\u202e\u200b\U000E0041"
	spoofAction      = `{"amount":20000,"to":"acct-\u202eevil\u200b\udb40\udc41","type":"transfer"}`
)

// fakeApprovalGateway serves one parked request to the approver commands
// and counts the signed notes posted to it.
func fakeApprovalGateway(t *testing.T, action string) (url string, posted *atomic.Int32) {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	r := approval.Request{
		ID: "req-1", Agent: "agent-\x1b[32m7", Action: sha256.Sum256([]byte(action)), Policy: "sha256:" + strings.Repeat("ab", 32),
		Requirements: []policy.Requirement{{Rule: "NoHighValueTransfers", Approvers: 2, Groups: []string{"treasury\u202e"}}},
		Created:      now, Expires: now.Add(time.Hour), State: approval.Pending,
	}
	p := gateway.PendingRequest{
		Request: r, Action: json.RawMessage(action),
		Instruction: spoofInstruction, Reasoning: "trust me\r\x1b[2K",
		Rules:       []policy.FiredRule{{Name: "NoHighValueTransfers", Outcome: policy.OutcomeRequireApproval, Message: "over $10,000\x1b[8m"}},
		StillNeeded: []int{2},
		Approve:     string(r.Statement(approval.Approve, "").Marshal()),
	}
	posted = new(atomic.Int32)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/approvals", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"pending": []gateway.PendingRequest{p}})
	})
	mux.HandleFunc("POST /v1/requests/req-1/approvals", func(w http.ResponseWriter, _ *http.Request) {
		posted.Add(1)
		json.NewEncoder(w).Encode(gateway.ApprovalResult{Request: r})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, posted
}

func approverKeyFile(t *testing.T) string {
	t.Helper()
	skey, _, err := note.GenerateKey(rand.Reader, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "alice.key")
	if err := os.WriteFile(f, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func runApprover(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(k string) string {
		if k == "RULELOCK_TOKEN" {
			return "approver-token"
		}
		return ""
	}}
	code = run(context.Background(), e, args)
	return code, out.String(), errOut.String()
}

// TestApproverCLIOutputIsTerminalSafe: what pending and approve print of a
// hostile parked request holds no byte a terminal acts on or hides (only
// "\n" among the controls), and shows the spoofing characters as escapes.
func TestApproverCLIOutputIsTerminalSafe(t *testing.T) {
	url, posted := fakeApprovalGateway(t, spoofAction)
	key := approverKeyFile(t)
	for _, args := range [][]string{
		{"pending", "--gateway", url},
		{"approve", "req-1", "--key", key, "--gateway", url},
	} {
		code, out, errOut := runApprover(t, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s", args[0], code, errOut)
		}
		for name, s := range map[string]string{"stdout": out, "stderr": errOut} {
			if !utf8.ValidString(s) {
				t.Errorf("%s: %s is not valid UTF-8", args[0], name)
			}
			for i, r := range s {
				if r != '\n' && review.Hidden(r) {
					t.Errorf("%s: %s holds %U at byte %d:\n%s", args[0], name, r, i, s)
					break
				}
			}
		}
		for _, want := range []string{
			`amount = 20000`,
			`to = "acct-\u{202E}evil\u{200B}\u{E0041}"`,
			`agent-\x1b[32m7`,
			"agent's instruction (unverified, the agent's claim):\n    | Pay invoice 1234\\r\\x1b[1A\\x1b[2K  action:",
			`over $10,000\x1b[8m`,
			`needs 2 from treasury\u{202E} (rule NoHighValueTransfers): 2 more`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: output lacks %s:\n%s", args[0], want, out)
			}
		}
	}
	if posted.Load() != 1 {
		t.Errorf("%d approvals posted, want 1", posted.Load())
	}
}

// TestApproveRefusesUnshowableAction: an action that hashes right but is
// not strict JSON (a duplicate key, which one reader takes as acct-1 and
// another as acct-evil) is not signed.
func TestApproveRefusesUnshowableAction(t *testing.T) {
	url, posted := fakeApprovalGateway(t, `{"amount":20000,"to":"acct-1","to":"acct-evil","type":"transfer"}`)
	code, out, errOut := runApprover(t, "approve", "req-1", "--key", approverKeyFile(t), "--gateway", url)
	if code == 0 || posted.Load() != 0 {
		t.Fatalf("exit %d with %d approvals posted, want a refusal and none\n%s", code, posted.Load(), out)
	}
	if !strings.Contains(errOut, "refusing to sign") || !strings.Contains(out, "DO NOT APPROVE") {
		t.Errorf("stdout:\n%s\nstderr:\n%s", out, errOut)
	}
}

// TestApproverCLIEscapesGatewayErrors: an error the gateway (or whatever
// answers at its address) returns is printed escaped too.
func TestApproverCLIEscapesGatewayErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"error":{"code":"closed\u001b[2K","message":"no\r\u001b[1A\u202e such request"}}`))
	}))
	defer srv.Close()
	code, out, errOut := runApprover(t, "pending", "--gateway", srv.URL)
	if code == 0 {
		t.Fatalf("exit 0\n%s", out)
	}
	for i, r := range out + errOut {
		if r != '\n' && review.Hidden(r) {
			t.Fatalf("output holds %U at byte %d:\n%s%s", r, i, out, errOut)
		}
	}
	if want := `no\r\x1b[1A\u{202E} such request (closed\x1b[2K)`; !strings.Contains(errOut, want) {
		t.Errorf("stderr %q lacks %s", errOut, want)
	}
}
