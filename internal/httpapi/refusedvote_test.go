package httpapi_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/lifecycle"
	"github.com/rulelock/rulelock/internal/replay"
	"github.com/rulelock/rulelock/policy"
)

// twoTreasurers parks every trade for two treasury approvers within 4 s.
const twoTreasurers = `policy "q" {
  default: deny
}
rule "TwoTreasurers" {
  precondition: action.type == "trade"
  condition: false
  require_approval {
    approvers: 2
    groups: ["treasury"]
    within: 4s
  }
}
rule "AllowTrades" {
  precondition: action.type == "trade"
  allow
}
`

// TestRefusedVotesAreLogged: every kind of refused approval or rejection
// sent through the API — unknown request, bad signature, unknown approver,
// wrong group, self-approval, duplicate, expired — is answered with its
// stable code as before and is now one log entry: a note naming the
// authenticated caller, the request, the code and the reason, with the
// submitted statement by its digest. verify --replay passes on the log.
// On main a refused attempt left no entry.
func TestRefusedVotesAreLogged(t *testing.T) {
	data := t.TempDir()
	srcs := []policy.Source{{Name: "q.rules", Data: []byte(twoTreasurers)}}
	pol, err := policy.FromSources(srcs, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := (lifecycle.Archive{Dir: filepath.Join(data, "bundles")}).StoreDev(pol, srcs); err != nil {
		t.Fatal(err)
	}
	signers := map[string]note.Signer{}
	var as []approval.Approver
	for _, a := range []struct{ id, group string }{{"alice", "treasury"}, {"bob", "treasury"}, {"carol", "treasury"}, {"mallory", "ops"}, {"eve", ""}} {
		skey, vkey, err := note.GenerateKey(nil, a.id)
		if err != nil {
			t.Fatal(err)
		}
		signers[a.id], _ = note.NewSigner(skey)
		if a.group != "" { // eve's key is no approver's
			as = append(as, approval.Approver{ID: a.id, Groups: []string{a.group}, Key: vkey})
		}
	}
	reg, err := approval.NewRegistry(as)
	if err != nil {
		t.Fatal(err)
	}

	synctest.Test(t, func(t *testing.T) {
		l, err := audit.Open(filepath.Join(data, "log"), audit.Options{SegmentSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var executed atomic.Int64
		trade := gateway.ExecutorFunc(func(context.Context, gateway.Execution) gateway.Outcome {
			executed.Add(1)
			return gateway.Outcome{Status: gateway.StatusOK}
		})
		gw, err := gateway.New(gateway.Config{Policy: pol, Log: l, Approvers: reg, Executors: map[string]gateway.Executor{"trade": trade}})
		if err != nil {
			t.Fatal(err)
		}
		if err := gw.Activate(t.Context(), &gateway.Active{Policy: pol, Digest: pol.Digest(), Dev: true, Source: "q"}); err != nil {
			t.Fatal(err)
		}
		var tokens []httpapi.Token
		for _, id := range []string{"alice", "bob", "mallory"} {
			tokens = append(tokens, httpapi.Token{SHA256: httpapi.HashToken("approver-" + id), Agent: policy.Agent{ID: id}, Approver: true})
		}
		tokens = append(tokens,
			httpapi.Token{SHA256: httpapi.HashToken("agent-a"), Agent: policy.Agent{ID: "agent-a"}},
			httpapi.Token{SHA256: httpapi.HashToken("agent-bob"), Agent: policy.Agent{ID: "bob"}}) // an agent with an approver's id
		api := httpapi.New(httpapi.Config{Gateway: gw, Tokens: tokens, Log: &httpapi.AuditLog{Log: l}, Ready: func() bool { return true }})
		do := func(path, token, body string) reply {
			req := httptest.NewRequest("POST", path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			r := reply{status: rec.Code, raw: rec.Body.String()}
			json.Unmarshal(rec.Body.Bytes(), &r.body)
			return r
		}
		park := func(token string) approval.Request {
			t.Helper()
			r := do("/v1/actions", token, `{"action": {"type": "trade", "amount": 750000}}`)
			id, _ := r.body["request_id"].(string)
			for _, p := range gw.Pending() {
				if p.Request.ID == id {
					return p.Request
				}
			}
			t.Fatalf("not parked: %d %s", r.status, r.raw)
			return approval.Request{}
		}
		sign := func(who string, r approval.Request, v approval.Verdict) string {
			t.Helper()
			reason := ""
			if v == approval.Reject {
				reason = "wrong counterparty"
			}
			b, err := approval.Sign(r.Statement(v, reason), signers[who])
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
		vote := func(caller, id, signed string, v approval.Verdict) reply {
			route := "/approvals"
			if v == approval.Reject {
				route = "/rejections"
			}
			body, _ := json.Marshal(map[string]string{"note": signed})
			return do("/v1/requests/"+id+route, "approver-"+caller, string(body))
		}

		r1 := park("agent-a")
		r2 := park("agent-bob")
		tampered := strings.Replace(sign("alice", r1, approval.Approve), r1.ID, r1.ID[:len(r1.ID)-1]+"x", 1)
		cases := []struct {
			name, caller, id, signed string
			verdict                  approval.Verdict
			status                   int
			code                     string
			wait                     time.Duration // before the vote
		}{
			{"unknown request", "alice", "no-such-request", sign("alice", r1, approval.Approve), approval.Approve, 404, "not_found", 0},
			{"bad signature", "alice", r1.ID, tampered, approval.Approve, 409, "bad_signature", 0},
			{"unknown approver", "alice", r1.ID, sign("eve", r1, approval.Approve), approval.Approve, 409, "unknown_approver", 0},
			{"wrong group", "mallory", r1.ID, sign("mallory", r1, approval.Approve), approval.Approve, 409, "not_in_group", 0},
			{"wrong group, rejection", "mallory", r1.ID, sign("mallory", r1, approval.Reject), approval.Reject, 409, "not_in_group", 0},
			{"self-approval", "bob", r2.ID, sign("bob", r2, approval.Approve), approval.Approve, 409, "self_approval", 0},
			{"accepted", "alice", r1.ID, sign("alice", r1, approval.Approve), approval.Approve, 200, "", 0},
			{"duplicate", "alice", r1.ID, sign("alice", r1, approval.Approve), approval.Approve, 409, "duplicate_approver", 0},
			{"expired", "bob", r1.ID, sign("bob", r1, approval.Approve), approval.Approve, 409, "expired", 5 * time.Second},
		}
		for _, c := range cases {
			time.Sleep(c.wait)
			before := l.Size()
			r := vote(c.caller, c.id, c.signed, c.verdict)
			if r.status != c.status || errCode(r) != c.code {
				t.Errorf("%s: %d %s, want %d %q", c.name, r.status, r.raw, c.status, c.code)
			}
			if l.Size() != before+1 {
				t.Errorf("%s: %d entries appended, want 1", c.name, l.Size()-before)
				continue
			}
			b, err := l.ReadEntry(before)
			if err != nil {
				t.Fatal(err)
			}
			e, err := audit.DecodeEntry(b)
			if err != nil {
				t.Fatal(err)
			}
			if c.code == "" {
				if e.Kind != audit.KindApproval || e.Approver != c.caller {
					t.Errorf("%s: entry %+v, want alice's approval", c.name, e)
				}
				continue
			}
			got, ok := gateway.ParseRefusedVote(e)
			want := ledger.Approve
			if c.verdict == approval.Reject {
				want = ledger.Reject
			}
			if !ok || got.Code != c.code || got.Verb != want || got.Reason == "" {
				t.Errorf("%s: entry %s, want a refused %s note with code %s and a reason", c.name, b, want, c.code)
			}
			if e.Approver != c.caller || e.RequestID != c.id || e.Agent != "" {
				t.Errorf("%s: entry by %q on %q (agent %q), want by the caller %q on %q", c.name, e.Approver, e.RequestID, e.Agent, c.caller, c.id)
			}
			if e.Raw.Digest != sha256.Sum256([]byte(c.signed)) || e.Raw.Size != int64(len(c.signed)) {
				t.Errorf("%s: raw %+v, want the submitted statement's digest", c.name, e.Raw)
			}
		}
		if executed.Load() != 0 {
			t.Fatalf("%d executions, want none", executed.Load())
		}

		sum, err := replay.Verify(l, replay.Options{Bundles: filepath.Join(data, "bundles"), Approvers: reg, AllowDevelopment: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(sum.Findings) != 0 {
			t.Fatalf("verify --replay on a log with refused votes: findings %+v", sum.Findings)
		}
		// And the gateway restarts on it (the same fold rebuilds the state).
		if _, err := gateway.New(gateway.Config{Policy: pol, Log: l, Approvers: reg}); err != nil {
			t.Fatalf("restart on a log with refused votes: %v", err)
		}
	})
}
