package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// TestVerifyReplayPolicyChangedBetweenApprovals: a signed bundle is active,
// a $750,000 trade is parked, one treasury approver signs, a newer bundle
// is activated (SIGHUP), the second approver signs: the gateway rightly
// denies the trade policy_changed, and `verify --replay` of that honest log
// finds nothing, in text and in --json.
func TestVerifyReplayPolicyChangedBetweenApprovals(t *testing.T) {
	dir := t.TempDir()
	signedBundles(t, dir)
	data := filepath.Join(dir, "data")
	signers := map[string]note.Signer{}
	var approvers []approverConfig
	for _, name := range []string{"treasurer-1", "treasurer-2"} {
		vk := cli(t, dir, "keygen", "--name", name, "--out", filepath.Join(dir, name+".key"))
		skey, err := os.ReadFile(filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if signers[name], err = note.NewSigner(strings.TrimSpace(string(skey))); err != nil {
			t.Fatal(err)
		}
		approvers = append(approvers, approverConfig{ID: name, Groups: []string{"treasury"}, Key: strings.TrimSpace(vk)})
	}
	var stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
	cfg := &serveConfig{Bundle: filepath.Join(dir, "b1"), Trust: filepath.Join(dir, "trust"), DataDir: data, Listen: "127.0.0.1:0",
		Origin: "test.rulelock/log", Approvers: approvers,
		Agents: []agentConfig{{ID: "agent-1", Roles: []string{"payments"}, TokenSHA256: strings.Repeat("0", 64)}}}
	cfg.CheckpointInterval.Duration = 50 * time.Millisecond
	g, err := startGateway(context.Background(), e, cfg, false)
	if err != nil {
		t.Fatalf("start: %v\n%s", err, &stderr)
	}
	ctx := context.Background()
	act, err := policy.NewAction(map[string]any{"type": "trade", "amount": 750000.0, "counterparty": "acme"})
	if err != nil {
		t.Fatal(err)
	}
	parked, err := g.gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: "agent-1", Roles: []string{"payments"}}, Action: act}, true)
	if err != nil || parked.Approval == nil {
		t.Fatalf("park: %+v %v", parked, err)
	}
	approve := func(who string) *gateway.ApprovalResult {
		t.Helper()
		signed, err := approval.Sign(parked.Approval.Statement(approval.Approve, ""), signers[who])
		if err != nil {
			t.Fatal(err)
		}
		res, err := g.gw.Approve(ctx, "caller", parked.RequestID, signed)
		if err != nil {
			t.Fatalf("approve as %s: %v", who, err)
		}
		return res
	}
	approve("treasurer-1")
	g.cfg.Bundle = filepath.Join(dir, "b2")
	g.reload(ctx)
	if g.gw.Active().Version != 2 {
		t.Fatalf("after the reload: version %d, want 2\n%s", g.gw.Active().Version, &stderr)
	}
	if res := approve("treasurer-2"); res.Result == nil || res.Result.Decision.Reason != "policy_changed" {
		t.Fatalf("second approval: %+v, want a policy_changed denial", res.Result)
	}
	g.close()

	conf := filepath.Join(dir, "rulelock.yaml")
	var y strings.Builder
	y.WriteString("approvers:\n")
	for _, a := range approvers {
		y.WriteString("  - id: " + a.ID + "\n    groups: [treasury]\n    key: " + a.Key + "\n")
	}
	if err := os.WriteFile(conf, []byte(y.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"verify", filepath.Join(data, "log"), "--key", filepath.Join(data, "log.pub"), "--replay", "--config", conf}
	out, code, errOut := cliCode(t, dir, args...)
	if code != 0 || !strings.Contains(out, "0 findings") {
		t.Fatalf("verify --replay: exit %d\n%s%s", code, out, errOut)
	}
	out, code, errOut = cliCode(t, dir, append(args, "--json")...)
	var doc struct {
		OK     bool `json:"ok"`
		Replay struct {
			Decisions int    `json:"decisions_replayed"`
			Findings  *[]any `json:"findings"` // an empty list, not null
		} `json:"replay"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != 0 || !doc.OK || doc.Replay.Decisions != 2 || doc.Replay.Findings == nil || len(*doc.Replay.Findings) != 0 {
		t.Fatalf("verify --replay --json: exit %d, %+v (%v)\n%s%s", code, doc, err, out, errOut)
	}
}
