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
// denied principal_revoked by the reload itself (logged with the reload's
// digest, before anyone votes, never executed), a bad config keeps what
// is in force, and the log, with its reload entry, verifies and replays.
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
	late := o.approval("alice", parkedID) // signed while it is pending, sent after the reload
	o.writeConfig([]string{"agent-2"}, []string{"alice", "bob"})
	code, out, stderr := o.cli("", "reload", "--data", o.data)
	if code != 0 || !strings.Contains(out, "agents added [] removed [agent-1] changed []") || !strings.Contains(out, "approvers added [] removed [carol]") {
		t.Fatalf("reload: exit %d\n%s\n%s", code, out, stderr)
	}
	// The removed agent's parked request is denied by the reload, before
	// anyone votes; the trade, which alice and bob can still approve, stays.
	if want := "parked requests denied [" + parkedID + " (agent-1: principal_revoked)]"; !strings.Contains(out, want) {
		t.Errorf("reload output %q does not say %q", out, want)
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
	// The parked request of the removed agent is no longer pending: a vote
	// on it is refused, and nothing reached the upstream.
	if status, pending := o.do("alice", "GET", "/v1/approvals", ""); status != 200 || strings.Contains(toJSON(pending), parkedID) {
		t.Errorf("pending after the reload: %d %v, want without %s", status, pending, parkedID)
	}
	if status, res := o.do("alice", "POST", "/v1/requests/"+parkedID+"/approvals", late); status != 409 {
		t.Errorf("approval of the removed agent's denied request: %d %v, want 409", status, res)
	}
	for _, b := range o.upstream.seen() {
		if strings.Contains(b, "acct-big") {
			t.Errorf("the revoked request reached the upstream: %s", b)
		}
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
	if logged[parkedID] != 2 { // parked, then denied by the reload
		t.Errorf("the parked request has %d decision entries, want 2", logged[parkedID])
	}
	checkRevokedEntry(t, es, parkedID, "principal_revoked", good)
	delete(logged, parkedID)
	checkNoDecisionLost(t, logged, a)
	sum := sha256.Sum256(good)
	var reloads, refused, starts int
	for _, e := range es {
		if e.Kind != audit.KindNote {
			continue
		}
		if strings.HasPrefix(e.Message, "reload sha256:"+hex.EncodeToString(sum[:])+": ") && !strings.HasSuffix(e.Message, ": at start") {
			reloads++
		}
		if e.Message == "reload sha256:"+hex.EncodeToString(sum[:])+": at start" {
			starts++ // the restart, with the trade parked: nothing to deny
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
	if reloads != 1 || refused != 1 || starts != 1 {
		t.Errorf("%d reload entries with the config's digest, %d refused reloads and %d re-checks at start, want 1, 1 and 1", reloads, refused, starts)
	}
	o.verify()
}

// checkRevokedEntry checks that request id's last decision entry is the
// reload's denial for reason, naming the digest of config and after the
// note of that reload.
func checkRevokedEntry(t *testing.T, es []*audit.Entry, id, reason string, config []byte) {
	t.Helper()
	sum := sha256.Sum256(config)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	note := -1
	for i, e := range es {
		if e.Kind == audit.KindNote && strings.HasPrefix(e.Message, "reload "+digest+": ") {
			note = i
		}
		if e.Kind != audit.KindDecision || e.RequestID != id || e.Decision == "require_approval" {
			continue
		}
		if e.Decision != "deny" || e.Message != reason || !strings.Contains(e.State.Text, `"reload":"`+digest+`"`) || note < 0 {
			t.Errorf("entry %d: %s %s state %s (reload note at %d), want deny %s naming %s after its note", i, e.Decision, e.Message, e.State.Text, note, reason, digest)
		}
		return
	}
	t.Errorf("no denial of %s in the log", id)
}

// TestReloadDeniesUnmeetable: a reload that leaves fewer approvers than a
// parked trade needs denies it at once, approval_impossible, logged with
// the reload's digest; a parked transfer one approver can still approve
// stays parked and is executed at its quorum. A vote on the denied trade is
// refused, the upstream never sees it, and the log verifies with --replay.
// A forged denial (the same entry naming a config no reload loaded) is
// caught by the replay (internal/replay: TestReplayRevokedAtReload).
func TestReloadDeniesUnmeetable(t *testing.T) {
	o := newOpsGateway(t, []string{"agent-1"}, []string{"alice", "bob"})
	_, trade := o.do("agent-1", "POST", "/v1/actions", `{"action": {"type": "trade", "amount": 750000, "counterparty": "acme"}}`)
	_, transfer := o.do("agent-1", "POST", "/v1/actions", `{"action": {"type": "transfer", "amount": 20000, "to": "acct-big"}}`)
	if decisionOf(trade) != "require_approval" || decisionOf(transfer) != "require_approval" {
		t.Fatalf("park: %v %v", trade, transfer)
	}
	tradeID, transferID := trade["request_id"].(string), transfer["request_id"].(string)
	if status, res := o.approve("bob", tradeID); status != 200 {
		t.Fatalf("bob's approval: %d %v", status, res)
	}
	late := o.approval("alice", tradeID)
	o.writeConfig([]string{"agent-1"}, []string{"alice"})
	code, out, stderr := o.cli("", "reload", "--data", o.data)
	if want := "parked requests denied [" + tradeID + " (agent-1: approval_impossible)]"; code != 0 || !strings.Contains(out, want) {
		t.Fatalf("reload: exit %d, %q, want %q\n%s", code, out, want, stderr)
	}
	// The agent, still configured, sees its trade denied.
	if status, res := o.do("agent-1", "GET", "/v1/requests/"+tradeID, ""); status != 200 || decisionOf(res) != "deny" || res["decision"].(map[string]any)["reason"] != "approval_impossible" {
		t.Errorf("the trade after the reload: %d %v, want deny approval_impossible", status, res)
	}
	if status, res := o.do("alice", "POST", "/v1/requests/"+tradeID+"/approvals", late); status != 409 {
		t.Errorf("alice's approval of the denied trade: %d %v, want 409", status, res)
	}
	if status, res := o.approve("alice", transferID); status != 200 || decisionOf(res["result"].(map[string]any)) != "approved" {
		t.Errorf("alice's approval of the transfer: %d %v, want approved", status, res)
	}
	if seen := o.upstream.seen(); len(seen) != 1 || !strings.Contains(seen[0], "acct-big") {
		t.Errorf("the upstream saw %q, want the transfer only", seen)
	}
	cfg, _ := os.ReadFile(o.cfgPath)
	if err := o.stop(); err != nil {
		t.Fatal(err)
	}
	checkRevokedEntry(t, o.entries(), tradeID, "approval_impossible", cfg)
	o.verify()
	// After a restart the denied trade is not pending again.
	o.start()
	if status, pending := o.do("alice", "GET", "/v1/approvals", ""); status != 200 || strings.Contains(toJSON(pending), tradeID) {
		t.Errorf("after the restart: %d %v, want the trade not pending", status, pending)
	}
	if err := o.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestRestartDeniesRemoved: an agent removed from the config while the
// gateway is down is a reload too: at the start, its parked request is
// denied principal_revoked, logged after a note naming the config, before
// anyone votes; another agent's parked request stays parked; the log
// verifies with --replay.
func TestRestartDeniesRemoved(t *testing.T) {
	o := newOpsGateway(t, []string{"agent-1", "agent-2"}, []string{"alice", "bob"})
	_, gone := o.do("agent-1", "POST", "/v1/actions", `{"action": {"type": "transfer", "amount": 20000, "to": "acct-big"}}`)
	_, kept := o.do("agent-2", "POST", "/v1/actions", `{"action": {"type": "transfer", "amount": 20000, "to": "acct-other"}}`)
	if decisionOf(gone) != "require_approval" || decisionOf(kept) != "require_approval" {
		t.Fatalf("park: %v %v", gone, kept)
	}
	goneID, keptID := gone["request_id"].(string), kept["request_id"].(string)
	if err := o.stop(); err != nil {
		t.Fatal(err)
	}
	o.writeConfig([]string{"agent-2"}, []string{"alice", "bob"})
	o.start()
	if !strings.Contains(o.stderr.String(), "at start, parked requests denied ["+goneID+" (agent-1: principal_revoked)]") {
		t.Errorf("the gateway's stderr does not say it denied %s:\n%s", goneID, o.stderr)
	}
	status, pending := o.do("alice", "GET", "/v1/approvals", "")
	if status != 200 || strings.Contains(toJSON(pending), goneID) || !strings.Contains(toJSON(pending), keptID) {
		t.Errorf("pending after the restart: %d %v, want %s only", status, pending, keptID)
	}
	if status, res := o.approve("alice", keptID); status != 200 || decisionOf(res["result"].(map[string]any)) != "approved" {
		t.Errorf("the other agent's request: %d %v, want approved", status, res)
	}
	if seen := o.upstream.seen(); len(seen) != 1 || !strings.Contains(seen[0], "acct-other") {
		t.Errorf("the upstream saw %q, want the other agent's transfer only", seen)
	}
	cfg, _ := os.ReadFile(o.cfgPath)
	if err := o.stop(); err != nil {
		t.Fatal(err)
	}
	checkRevokedEntry(t, o.entries(), goneID, "principal_revoked", cfg)
	o.verify()
}
