package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/export"
)

// metricLine returns the line of /metrics for series (name{labels}), or "".
func metricLine(t *testing.T, url, token, series string) string {
	t.Helper()
	_, m := getAuth(t, url+"/metrics", token)
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, series+" ") {
			return l
		}
	}
	return ""
}

// waitMetric waits for series to appear (the count at start runs in the
// background) and returns its line.
func waitMetric(t *testing.T, url, token, series string) string {
	t.Helper()
	for {
		if l := metricLine(t, url, token, series); l != "" {
			return l
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServeLogServices: the gateway exports its log to the export: file,
// serves GET /v1/log/find to approvers only, and its log-derived counters
// come back after a restart where they were, not at zero.
func TestServeLogServices(t *testing.T) {
	data := t.TempDir()
	out := filepath.Join(t.TempDir(), "siem.jsonl")
	withExport := func(c *serveConfig) { c.Export = &exportConfig{To: "file:" + out, poll: 20 * time.Millisecond} }
	url, token, stop := testServe(t, data, withExport)
	for _, body := range []string{
		`{"action": {"type": "transfer", "amount": 9000, "to": "acct-7"}}`,
		`{"action": {"type": "Transfer", "amount": 5, "to": "acct-7"}}`,
		`{"action": {"type": "trade", "amount": 750000, "counterparty": "acme"}}`,
		`{"action": {"type": "transfer", "amount": 10, "to": "acct-8"}}`,
	} {
		post(t, url, token, body)
	}
	allow := waitMetric(t, url, token, `rulelock_log_decisions_total{decision="allow"}`)
	if allow != `rulelock_log_decisions_total{decision="allow"} 2` {
		t.Errorf("got %q, want 2 allowed", allow)
	}

	// The search route: approvers and auditors only, strict parameters,
	// entries byte for byte with their leaf hashes.
	approver, err := os.ReadFile(filepath.Join(data, "approvers", "alice.token"))
	if err != nil {
		t.Fatal(err)
	}
	if status, body := getAuth(t, url+"/v1/log/find?decision=deny", token); status != 403 {
		t.Errorf("an agent searching the log: %d %s, want 403", status, body)
	}
	if status, body := getAuth(t, url+"/v1/log/find?decison=deny", string(approver)); status != 400 || !strings.Contains(body, "unknown parameter") {
		t.Errorf("a misspelt parameter: %d %s, want 400", status, body)
	}
	status, body := getAuth(t, url+"/v1/log/find?type=transfer&decision=allow&limit=1", string(approver))
	var found struct {
		Entries  []export.Line `json:"entries"`
		LogSize  int64         `json:"log_size"`
		NextFrom *int64        `json:"next_from"`
	}
	if err := json.Unmarshal([]byte(body), &found); status != 200 || err != nil || len(found.Entries) != 1 || found.NextFrom == nil {
		t.Fatalf("find: %d %s (%v)", status, body, err)
	}
	if err := found.Entries[0].Check(); err != nil {
		t.Error(err)
	}
	if !regexp.MustCompile(`"action":"\{\\"amount\\":9000,.*"decision":"allow"`).Match(found.Entries[0].Entry) {
		t.Errorf("first allowed transfer: %s", found.Entries[0].Entry)
	}
	_, body = getAuth(t, url+"/v1/log/find?type=transfer&decision=allow&from="+itoa(*found.NextFrom), string(approver))
	if !strings.Contains(body, `\"amount\":10,`) || strings.Contains(body, "next_from") {
		t.Errorf("second page: %s", body)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Restart: the counters start from the log, and the exporter from its
	// cursor.
	url, token, stop = testServe(t, data, withExport)
	if got := waitMetric(t, url, token, `rulelock_log_decisions_total{decision="allow"}`); got != allow {
		t.Errorf("after a restart: %q, want %q", got, allow)
	}
	post(t, url, token, `{"action": {"type": "transfer", "amount": 11, "to": "acct-9"}}`)
	if got := metricLine(t, url, token, `rulelock_log_decisions_total{decision="allow"}`); got != `rulelock_log_decisions_total{decision="allow"} 3` {
		t.Errorf("after one more: %q, want 3", got)
	}
	size := func() int64 {
		s, err := audit.OpenSnapshot(filepath.Join(data, "log"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return s.Size()
	}
	want := size()
	for metricLine(t, url, token, "rulelock_export_lag_entries") != "rulelock_export_lag_entries 0" ||
		metricLine(t, url, token, "rulelock_export_entries_total") != "rulelock_export_entries_total "+itoa(want) {
		time.Sleep(10 * time.Millisecond)
		want = size()
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := audit.OpenSnapshot(filepath.Join(data, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	next := int64(0)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var l export.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Check() != nil || l.Index > next {
			t.Fatalf("exported line %s: %v (next %d)", sc.Bytes(), err, next)
		}
		if l.Index == next {
			next++
		}
	}
	if next < want {
		t.Errorf("exported [0, %d), the exporter acknowledged [0, %d)", next, want)
	}
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }
