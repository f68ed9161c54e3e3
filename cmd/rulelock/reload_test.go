package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/audit"
)

// TestReloadRevokesUnderTraffic: while an agent sends actions, a reload
// removes it and an approver. The agent's next request gets 401, no
// decision is lost or doubled (the log's decisions are exactly the
// answered ones), the other agent still acts, the removed approver can
// neither use the API nor freeze, the removed agent's parked request is
// denied principal_revoked at its quorum, a bad config keeps what is in
// force, and the log, with its reload entry, verifies and replays.
func TestReloadRevokesUnderTraffic(t *testing.T) {
	o := newOpsGateway(t, []string{"agent-1", "agent-2"}, []string{"alice", "bob", "carol"})
	// A request of agent-1 parked before the reload.
	status, parked := o.do("agent-1", "POST", "/v1/actions", `{"action": {"type": "transfer", "amount": 20000, "to": "acct-big"}}`)
	if status != 200 || decisionOf(parked) != "require_approval" {
		t.Fatalf("park: %d %v", status, parked)
	}
	parkedID := parked["request_id"].(string)
	// A trade of agent-2 that carol approves (one of two) before her removal.
	status, trade := o.do("agent-2", "POST", "/v1/actions", `{"action": {"type": "trade", "amount": 750000, "counterparty": "acme"}}`)
	if status != 200 || decisionOf(trade) != "require_approval" {
		t.Fatalf("park the trade: %d %v", status, trade)
	}
	tradeID := trade["request_id"].(string)
	if status, res := o.approve("carol", tradeID); status != 200 {
		t.Fatalf("carol's approval: %d %v", status, res)
	}

	a := newAnswers()
	stop := make(chan struct{})
	wg := o.traffic("agent-1", "reload", 4, a, stop)
	waitAnswers(t, a, 20)
	o.writeConfig([]string{"agent-2"}, []string{"alice", "bob"})
	code, out, stderr := o.cli("", "reload", "--data", o.data)
	if code != 0 || !strings.Contains(out, "agents added [] removed [agent-1] changed []") || !strings.Contains(out, "approvers added [] removed [carol]") {
		t.Fatalf("reload: exit %d\n%s\n%s", code, out, stderr)
	}
	if strings.Contains(out, "other settings") {
		t.Errorf("reload says other settings changed, and only who may act did: %s", out)
	}
	// From the moment reload answered, the token is refused.
	if status, res := o.do("agent-1", "POST", "/v1/actions", `{"action": {"type": "transfer", "amount": 1, "to": "after"}}`); status != 401 {
		t.Errorf("agent-1 after the reload: %d %v, want 401", status, res)
	}
	wg.Wait() // each worker stops at its first 401
	close(stop)
	t.Logf("answers during the reload: %v", a.statusN)
	if a.byCode["unauthenticated"] != 4 || len(a.statusN) != 2 || a.statusN[200] == 0 {
		t.Errorf("answers during the reload: %v %v, want only 200s and one 401 per worker", a.statusN, a.byCode)
	}
	if status, res := o.do("agent-2", "POST", "/v1/actions", `{"action": {"type": "transfer", "amount": 1, "to": "acct-2"}}`); status != 200 || decisionOf(res) != "allow" {
		t.Errorf("agent-2 after the reload: %d %v", status, res)
	}
	if status, _ := o.do("carol", "GET", "/v1/approvals", ""); status != 401 {
		t.Errorf("carol's token after the reload: %d, want 401", status)
	}
	if code, _, stderr := o.cli("carol", "freeze", "--reason", "x", "--key", o.keys["carol"], "--gateway", o.url); code == 0 {
		t.Errorf("carol froze the gateway after her removal: %s", stderr)
	}
	// The parked request of the removed agent: denied at its quorum.
	status, res := o.approve("alice", parkedID)
	result, _ := res["result"].(map[string]any)
	if status != 200 || decisionOf(result) != "deny" || result["decision"].(map[string]any)["reason"] != "principal_revoked" {
		t.Errorf("approval of the removed agent's parked request: %d %v, want deny principal_revoked", status, res)
	}

	// A bad config keeps what is in force, and says why.
	good, _ := os.ReadFile(o.cfgPath)
	os.WriteFile(o.cfgPath, append(good, []byte("no_such_key: 1\n")...), 0o600)
	code, _, stderr = o.cli("", "reload", "--data", o.data)
	if code == 0 || !strings.Contains(stderr, "no_such_key") {
		t.Errorf("bad config: exit %d, %s", code, stderr)
	}
	if !strings.Contains(o.stderr.String(), "reload refused, who may act is unchanged") {
		t.Errorf("the gateway's stderr does not say the reload was refused:\n%s", o.stderr)
	}
	if status, _ := o.do("agent-2", "POST", "/v1/actions", `{"action": {"type": "transfer", "amount": 1, "to": "acct-3"}}`); status != 200 {
		t.Errorf("agent-2 after a refused reload: %d", status)
	}
	if status, _ := o.do("agent-1", "POST", "/v1/actions", `{"action": {"type": "transfer", "amount": 1, "to": "acct-3"}}`); status != 401 {
		t.Errorf("agent-1 after a refused reload: %d, want 401 still", status)
	}
	os.WriteFile(o.cfgPath, good, 0o600)
	// A restart on the reloaded config: the log holds carol's approval,
	// which no configured key verifies now. The gateway starts, and her
	// approval no longer counts.
	if err := o.stop(); err != nil {
		t.Fatal(err)
	}
	o.start()
	status, pending := o.do("alice", "GET", "/v1/approvals", "")
	if status != 200 || !strings.Contains(toJSON(pending), tradeID) || !strings.Contains(toJSON(pending), `"still_needed":[2]`) {
		t.Errorf("after the restart: %d %v, want the trade pending and still needing two approvers", status, pending)
	}
	if err := o.stop(); err != nil {
		t.Fatal(err)
	}

	es := o.entries()
	logged := decisionsOf(es, "agent-1")
	if logged[parkedID] != 2 { // parked, then denied at its quorum
		t.Errorf("the parked request has %d decision entries, want 2", logged[parkedID])
	}
	delete(logged, parkedID)
	checkNoDecisionLost(t, logged, a)
	sum := sha256.Sum256(good)
	var reloads, refused int
	for _, e := range es {
		if e.Kind != audit.KindNote {
			continue
		}
		if strings.HasPrefix(e.Message, "reload sha256:"+hex.EncodeToString(sum[:])+": ") {
			reloads++
		}
		if strings.HasPrefix(e.Message, "reload_refused: ") {
			refused++
		}
		for id, tok := range o.tokens {
			h := sha256.Sum256([]byte(tok))
			if strings.Contains(e.Message, hex.EncodeToString(h[:])) {
				t.Errorf("a note holds %s's token hash: %s", id, e.Message)
			}
		}
	}
	if reloads != 1 || refused != 1 {
		t.Errorf("%d reload entries with the config's digest and %d refused reloads, want 1 and 1", reloads, refused)
	}
	o.verify()
}
