package main

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/ledger"
)

// TestFreezeUnderTrafficAcrossRestart: an approver freezes the gateway
// while an agent sends actions. Every action after the freeze is refused
// frozen and logged, none reaches the upstream; /readyz and /metrics show
// the freeze; a parked request stays parked (its approval is refused); the
// freeze survives a restart; one approver cannot lift it, nor the same
// approver twice; two can. No decision is lost or doubled, and the log
// verifies and replays.
func TestFreezeUnderTrafficAcrossRestart(t *testing.T) {
	o := newOpsGateway(t, []string{"agent-1"}, []string{"alice", "bob"})
	status, parked := o.do("agent-1", "POST", "/v1/actions", `{"action": {"type": "transfer", "amount": 20000, "to": "acct-big"}}`)
	if status != 200 || decisionOf(parked) != "require_approval" {
		t.Fatalf("park: %d %v", status, parked)
	}
	parkedID := parked["request_id"].(string)

	a := newAnswers()
	stop := make(chan struct{})
	wg := o.traffic("agent-1", "before", 4, a, stop)
	waitAnswers(t, a, 20)
	code, out, stderr := o.cli("alice", "freeze", "--reason", "agent-1 pays unknown payees", "--key", o.keys["alice"], "--gateway", o.url)
	if code != 0 || !strings.Contains(out, "frozen: freeze f") {
		t.Fatalf("freeze: exit %d\n%s\n%s", code, out, stderr)
	}
	// From the moment freeze answered, nothing new reaches the upstream.
	during := newAnswers()
	wgDuring := o.traffic("agent-1", "during", 2, during, stop)
	waitAnswers(t, during, 20)
	close(stop)
	wg.Wait()
	wgDuring.Wait()
	if len(during.statusN) != 1 || during.statusN[503] == 0 || during.byCode["frozen"] != during.statusN[503] {
		t.Errorf("answers during the freeze: %v %v, want only 503 frozen", during.statusN, during.byCode)
	}
	for code, n := range a.byCode {
		if code != "frozen" {
			t.Errorf("answers around the freeze: %d of code %s", n, code)
		}
	}

	status, ready := o.do("bob", "GET", "/readyz", "")
	frozen, _ := ready["frozen"].(map[string]any)
	if status != 503 || ready["code"] != "frozen" || frozen == nil || frozen["freeze"].(map[string]any)["reason"] != "agent-1 pays unknown payees" {
		t.Errorf("/readyz as an approver: %d %v", status, ready)
	}
	if status, ready := o.do("", "GET", "/readyz", ""); status != 503 || ready["code"] != "frozen" || ready["frozen"] != nil || ready["reason"] != nil {
		t.Errorf("/readyz without a token: %d %v, want the code only", status, ready)
	}
	if m := o.metrics(); !strings.Contains(m, "\nrulelock_frozen 1\n") {
		t.Errorf("/metrics lacks rulelock_frozen 1")
	}
	if status, res := o.approve("bob", parkedID); status != 409 || res["error"].(map[string]any)["code"] != "frozen" {
		t.Errorf("approval during the freeze: %d %v, want 409 frozen", status, res)
	}

	// A restart: still frozen.
	if err := o.stop(); err != nil {
		t.Fatal(err)
	}
	o.start()
	if !strings.Contains(o.stderr.String(), "FROZEN since") {
		t.Errorf("the restarted gateway does not say it is frozen:\n%s", o.stderr)
	}
	after := newAnswers()
	stop = make(chan struct{})
	wg = o.traffic("agent-1", "restarted", 2, after, stop)
	waitAnswers(t, after, 10)

	// One approver, twice: still frozen.
	code, out, stderr = o.cli("alice", "unfreeze", "--key", o.keys["alice"], "--gateway", o.url)
	if code != 0 || !strings.Contains(out, "1 of 2 approvers (alice)") {
		t.Fatalf("alice's unfreeze: exit %d\n%s\n%s", code, out, stderr)
	}
	code, _, stderr = o.cli("alice", "unfreeze", "--key", o.keys["alice"], "--gateway", o.url)
	if code == 0 || !strings.Contains(stderr, "duplicate_vote") {
		t.Errorf("alice's second unfreeze: exit %d, %s; want duplicate_vote", code, stderr)
	}
	if status, _ := o.do("agent-1", "POST", "/v1/actions", `{"action": {"type": "transfer", "amount": 1, "to": "restarted-x"}}`); status != 503 {
		t.Errorf("after one approver's unfreeze: %d, want 503 frozen", status)
	}
	close(stop)
	wg.Wait()
	if len(after.statusN) != 1 || after.byCode["frozen"] != after.statusN[503] {
		t.Errorf("answers after the restart: %v %v, want only 503 frozen", after.statusN, after.byCode)
	}
	for _, b := range o.upstream.seen() {
		if strings.Contains(b, "during-") || strings.Contains(b, "restarted-") {
			t.Errorf("the upstream got an action sent during the freeze: %s", b)
		}
	}
	// The parked request is still parked.
	if status, p := o.do("bob", "GET", "/v1/approvals", ""); status != 200 || !strings.Contains(toJSON(p), parkedID) {
		t.Errorf("the parked request is no longer pending: %d %v", status, p)
	}

	code, out, stderr = o.cli("bob", "unfreeze", "--key", o.keys["bob"], "--gateway", o.url)
	if code != 0 || !strings.Contains(out, "unfrozen") {
		t.Fatalf("bob's unfreeze: exit %d\n%s\n%s", code, out, stderr)
	}
	if status, res := o.do("agent-1", "POST", "/v1/actions", `{"action": {"type": "transfer", "amount": 1, "to": "unfrozen-1"}}`); status != 200 || decisionOf(res) != "allow" {
		t.Errorf("after the unfreeze: %d %v", status, res)
	}
	if !slices.ContainsFunc(o.upstream.seen(), func(b string) bool { return strings.Contains(b, "unfrozen-1") }) {
		t.Error("the action after the unfreeze did not reach the upstream")
	}
	if m := o.metrics(); !strings.Contains(m, "\nrulelock_frozen 0\n") {
		t.Errorf("/metrics lacks rulelock_frozen 0 after the unfreeze")
	}
	if err := o.stop(); err != nil {
		t.Fatal(err)
	}

	es := o.entries()
	for id, s := range during.ids {
		a.ids[id] = s
	}
	for id, s := range after.ids {
		a.ids[id] = s
	}
	logged := decisionsOf(es, "agent-1")
	for _, e := range es {
		if e.Kind == audit.KindDecision && (strings.Contains(string(e.Action.Text), "unfrozen-1") || strings.Contains(string(e.Action.Text), "restarted-x")) {
			delete(logged, e.RequestID)
		}
	}
	delete(logged, parkedID)
	checkNoDecisionLost(t, logged, a)
	var notes []string
	for _, e := range es {
		if n, ok := ledger.ParseFreezeNote(e); ok {
			notes = append(notes, n.Word+" "+e.Approver+" "+strings.Join(e.Signers, ","))
		}
	}
	if want := []string{"freeze alice ", "unfreeze_vote alice ", "unfreeze_vote bob ", "unfreeze  alice,bob"}; !slices.Equal(notes, want) {
		t.Errorf("freeze notes %q, want %q", notes, want)
	}
	o.verify()
}

// metrics returns /metrics.
func (o *opsGateway) metrics() string {
	req, _ := http.NewRequest("GET", o.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+o.tokens["bob"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		o.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
