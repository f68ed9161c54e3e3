package httpapi

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/notify"
	"github.com/rulelock/rulelock/policy"
)

// TestNotifyMetrics: a webhook that fails for good and one that hangs
// show in /metrics as failures and queue depth, by group.
func TestNotifyMetrics(t *testing.T) {
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer failing.Close()
	held := make(chan struct{})
	arrived := make(chan struct{}, 10)
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-held:
		case <-r.Context().Done():
		}
	}))
	defer hanging.Close()
	defer close(held)
	immediately := func(time.Duration) <-chan time.Time {
		c := make(chan time.Time, 1)
		c <- time.Time{}
		return c
	}
	n, err := notify.New(notify.Options{ConsoleURL: "https://rulelock.example", Attempts: 2, After: immediately,
		Logger: slog.New(slog.DiscardHandler), Targets: map[string]notify.Target{
			"treasury": {URL: failing.URL + "/secret", Format: notify.FormatSlack},
			"risk":     {URL: hanging.URL + "/secret", Format: notify.FormatJSON},
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	m := NewMetrics()
	m.Notifications(n.Stats)
	req := func(id, group string) notify.Request {
		return notify.Request{ID: id, Agent: "a", ActionType: "trade", Requirements: []policy.Requirement{{Approvers: 1, Groups: []string{group}}}}
	}
	n.Parked(req("r-1", "treasury"))
	n.Parked(req("r-2", "risk"))
	<-arrived // r-2 is held
	n.Parked(req("r-3", "risk"))
	n.Parked(req("r-4", "risk"))
	for deadline := time.Now().Add(time.Minute); n.Stats()[1].GaveUp == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the failing webhook was never given up")
		}
	}
	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`rulelock_notify_failures_total{group="treasury"} 2`,
		`rulelock_notify_gave_up_total{group="treasury"} 1`,
		`rulelock_notify_queue_depth{group="treasury"} 0`,
		`rulelock_notify_queue_depth{group="risk"} 2`,
		`rulelock_notify_failures_total{group="risk"} 0`,
		`rulelock_notify_dropped_total{group="risk"} 0`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(string(body), "secret") {
		t.Error("/metrics shows a webhook URL")
	}
}
