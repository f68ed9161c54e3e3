package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/notify"
	"github.com/rulelock/rulelock/policy"
)

const (
	secretPath   = "/hooks/T000/B000/very-secret-path"
	secretHeader = "Bearer webhook-header-secret"
	console      = "https://rulelock.example/"
)

// receiver is a real local webhook. Each post is recorded and sent on got;
// reply decides the status of the n-th post (from 1); while hold is
// non-nil a post waits on it before replying.
type receiver struct {
	srv   *httptest.Server
	got   chan post
	mu    sync.Mutex
	posts int
	reply func(n int) int
	hold  chan struct{}
}

type post struct {
	path, auth string
	body       []byte
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{got: make(chan post, 100), reply: func(int) int { return http.StatusOK }}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.posts++
		n, hold := rc.posts, rc.hold
		rc.mu.Unlock()
		rc.got <- post{path: r.URL.Path, auth: r.Header.Get("Authorization"), body: b}
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(rc.reply(n))
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) url() string { return rc.srv.URL + secretPath }

// next returns the next post; the test fails after a minute without one
// (a hang guard, not a timing assertion).
func (rc *receiver) next(t *testing.T) post {
	t.Helper()
	select {
	case p := <-rc.got:
		return p
	case <-time.After(time.Minute):
		t.Fatal("no post reached the receiver")
		return post{}
	}
}

// notes is an in-memory audit log that keeps note entries.
type notes struct {
	mu      sync.Mutex
	entries []*audit.Entry
	added   chan string
}

func newNotes() *notes { return &notes{added: make(chan string, 100)} }

func (l *notes) Append(_ context.Context, e *audit.Entry) (audit.Receipt, error) {
	l.mu.Lock()
	l.entries = append(l.entries, e)
	l.mu.Unlock()
	l.added <- e.Message
	return audit.Receipt{}, nil
}

func (l *notes) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-l.added:
		return m
	case <-time.After(time.Minute):
		t.Fatal("no note was logged")
		return ""
	}
}

// waits records the backoff the notifier asks for and waits not at all.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) after(d time.Duration) <-chan time.Time {
	w.mu.Lock()
	w.d = append(w.d, d)
	w.mu.Unlock()
	c := make(chan time.Time, 1)
	c <- time.Time{}
	return c
}

func (w *waits) got() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.d)
}

func start(t *testing.T, opts notify.Options) *notify.Notifier {
	t.Helper()
	if opts.ConsoleURL == "" {
		opts.ConsoleURL = console
	}
	n, err := notify.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

var expires = time.Date(2026, 11, 22, 14, 0, 0, 0, time.UTC)

func parked(id, actionType string) notify.Request {
	return notify.Request{ID: id, Agent: "agent-42", ActionType: actionType, Expires: expires,
		Requirements: []policy.Requirement{{Rule: "BigTrades", Approvers: 2, Groups: []string{"treasury"}, Message: "trades over 100 need two"}}}
}

func target(rc *receiver, f notify.Format) notify.Target {
	return notify.Target{URL: rc.url(), Format: f, Headers: http.Header{"Authorization": {secretHeader}}}
}

type jsonBody struct {
	Event    string `json:"event"`
	Group    string `json:"group"`
	Unlisted int    `json:"unlisted"`
	Requests []struct {
		ID, Agent    string
		ActionType   string `json:"action_type"`
		URL          string
		Expires      time.Time
		Requirements []struct {
			Rule      string
			Approvers int
			Groups    []string
			Message   string
		}
	}
}

func decodeJSON(t *testing.T, p post) jsonBody {
	t.Helper()
	var b jsonBody
	if err := json.Unmarshal(p.body, &b); err != nil {
		t.Fatalf("%s: %v", p.body, err)
	}
	return b
}

func (b jsonBody) ids() []string {
	var out []string
	for _, r := range b.Requests {
		out = append(out, r.ID)
	}
	return out
}

func TestJSONNotification(t *testing.T) {
	rc := newReceiver(t)
	n := start(t, notify.Options{Targets: map[string]notify.Target{"treasury": target(rc, notify.FormatJSON)}})
	n.Parked(parked("r-1", "trade"))
	p := rc.next(t)
	if p.path != secretPath || p.auth != secretHeader {
		t.Errorf("got path %q, Authorization %q, want the configured ones", p.path, p.auth)
	}
	b := decodeJSON(t, p)
	if b.Event != "approval_requested" || b.Group != "treasury" || b.Unlisted != 0 || len(b.Requests) != 1 {
		t.Fatalf("got %s", p.body)
	}
	r := b.Requests[0]
	if r.ID != "r-1" || r.Agent != "agent-42" || r.ActionType != "trade" || !r.Expires.Equal(expires) ||
		r.URL != "https://rulelock.example/console/requests/r-1" {
		t.Errorf("got %+v", r)
	}
	if len(r.Requirements) != 1 || r.Requirements[0].Approvers != 2 || r.Requirements[0].Rule != "BigTrades" {
		t.Errorf("got requirements %+v", r.Requirements)
	}
}

// TestSlackNotification: the agent's action type cannot make a link, a
// mention, formatting, or hide itself behind bidi and control characters.
func TestSlackNotification(t *testing.T) {
	rc := newReceiver(t)
	n := start(t, notify.Options{Targets: map[string]notify.Target{"treasury": target(rc, notify.FormatSlack)}})
	hostile := "pay <https://evil.example|Approve here> <!channel> @channel *urgent* `x` \u202Eevil\u200b\r\n\x1b[2K\U000E0041"
	n.Parked(parked("r-1", hostile))
	p := rc.next(t)
	var b struct{ Text string }
	dec := json.NewDecoder(bytes.NewReader(p.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		t.Fatalf("%s: %v", p.body, err)
	}
	want := []string{
		"<https://rulelock.example/console/requests/r-1|r-1>",
		"`pay &lt;https://evil.example|Approve here&gt; &lt;!channel&gt; @channel *urgent* \\u{60}x\\u{60} \\u{202E}evil\\u{200B}\\r\\n\\x1b[2K\\u{E0041}`",
		"by agent `agent-42`",
		"2 approver(s) from `treasury`, rule `BigTrades`: `trades over 100 need two`",
		"expires 2026-11-22T14:00:00Z",
	}
	for _, w := range want {
		if !strings.Contains(b.Text, w) {
			t.Errorf("text %q\nlacks %q", b.Text, w)
		}
	}
	for _, bad := range []string{"<https://evil", "<!channel>", "\u202E", "\x1b", "\r"} {
		if strings.Contains(b.Text, bad) {
			t.Errorf("text %q holds %q unescaped", b.Text, bad)
		}
	}
	// One line per request plus its requirement: no line the agent made.
	if lines := strings.Count(b.Text, "\n"); lines != 2 {
		t.Errorf("got %d line breaks in %q, want 2", lines, b.Text)
	}
}

func TestLongFieldIsCutVisibly(t *testing.T) {
	rc := newReceiver(t)
	n := start(t, notify.Options{Targets: map[string]notify.Target{"treasury": target(rc, notify.FormatSlack)}})
	n.Parked(parked("r-1", strings.Repeat("a", 250)))
	var b struct{ Text string }
	json.Unmarshal(rc.next(t).body, &b)
	if !strings.Contains(b.Text, "`"+strings.Repeat("a", 200)+"…(50 more bytes)`") {
		t.Errorf("got %q, want 200 bytes and a visible cut", b.Text)
	}
}

// TestBatching: requests parked while a message is in flight go out
// together, one message per group.
func TestBatching(t *testing.T) {
	rc := newReceiver(t)
	rc.hold = make(chan struct{})
	n := start(t, notify.Options{Targets: map[string]notify.Target{"treasury": target(rc, notify.FormatJSON)}})
	n.Parked(parked("r-1", "trade"))
	first := rc.next(t) // in flight, held
	for _, id := range []string{"r-2", "r-3", "r-4", "r-5"} {
		n.Parked(parked(id, "trade"))
	}
	if q := n.Stats()[0].Queued; q != 4 {
		t.Fatalf("got %d queued, want 4", q)
	}
	rc.mu.Lock()
	close(rc.hold)
	rc.hold = nil
	rc.mu.Unlock()
	second := rc.next(t)
	if got := decodeJSON(t, first).ids(); !slices.Equal(got, []string{"r-1"}) {
		t.Errorf("first message: got %v, want [r-1]", got)
	}
	if got := decodeJSON(t, second).ids(); !slices.Equal(got, []string{"r-2", "r-3", "r-4", "r-5"}) {
		t.Errorf("second message: got %v, want r-2 to r-5 in one", got)
	}
}

// TestGroups: a request goes to each group it needs, once; a requirement
// without groups goes to every group.
func TestGroups(t *testing.T) {
	a, b := newReceiver(t), newReceiver(t)
	n := start(t, notify.Options{Targets: map[string]notify.Target{"treasury": target(a, notify.FormatJSON), "risk": target(b, notify.FormatJSON)}})
	r := parked("r-1", "trade")
	r.Requirements = append(r.Requirements, policy.Requirement{Rule: "Risk", Approvers: 1, Groups: []string{"risk", "treasury"}})
	n.Parked(r)
	if got := decodeJSON(t, a.next(t)); got.Group != "treasury" || !slices.Equal(got.ids(), []string{"r-1"}) {
		t.Errorf("treasury got %+v", got)
	}
	if got := decodeJSON(t, b.next(t)); got.Group != "risk" || !slices.Equal(got.ids(), []string{"r-1"}) {
		t.Errorf("risk got %+v", got)
	}
	any := parked("r-2", "trade")
	any.Requirements[0].Groups = nil
	n.Parked(any)
	for _, rc := range []*receiver{a, b} {
		if got := decodeJSON(t, rc.next(t)).ids(); !slices.Equal(got, []string{"r-2"}) {
			t.Errorf("got %v, want r-2 in every group", got)
		}
	}
}

// TestRetryUntilRecovered: a failing receiver is retried with doubling
// waits, capped, until it answers.
func TestRetryUntilRecovered(t *testing.T) {
	rc := newReceiver(t)
	rc.reply = func(n int) int {
		if n <= 4 {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	}
	var w waits
	n := start(t, notify.Options{Targets: map[string]notify.Target{"treasury": target(rc, notify.FormatJSON)},
		Backoff: time.Second, MaxBackoff: 3 * time.Second, After: w.after})
	n.Parked(parked("r-1", "trade"))
	for i := range 5 {
		if got := decodeJSON(t, rc.next(t)).ids(); !slices.Equal(got, []string{"r-1"}) {
			t.Fatalf("attempt %d: got %v", i+1, got)
		}
	}
	waitFor(t, func() bool { return n.Stats()[0].Delivered == 1 })
	if got, want := w.got(), []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("waits: got %v, want %v", got, want)
	}
	if s := n.Stats()[0]; s.Failures != 4 || s.GaveUp != 0 {
		t.Errorf("got %+v, want 4 failures, none for good", s)
	}
}

// waitFor polls cond (state the sender sets after the receiver replied);
// a minute without it is a hang, not a timing assertion.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
	}
}

// TestGiveUp: a message that fails for good is a note in the audit log and
// a warning, both naming the group and the requests and neither the URL nor
// the header.
func TestGiveUp(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		attempts int
		why      string
	}{
		{"server error, retried", http.StatusInternalServerError, 3, "HTTP 500"},
		{"not found, not retried", http.StatusNotFound, 1, "HTTP 404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t)
			rc.reply = func(int) int { return tc.status }
			var w waits
			var logs bytes.Buffer
			l := newNotes()
			n := start(t, notify.Options{Targets: map[string]notify.Target{"treasury": target(rc, notify.FormatSlack)},
				Attempts: 3, After: w.after, Log: l, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			n.Parked(parked("r-1", "trade"))
			msg := l.next(t)
			for _, want := range []string{`"treasury"`, "r-1", tc.why, "attempt"} {
				if !strings.Contains(msg, want) {
					t.Errorf("note %q lacks %q", msg, want)
				}
			}
			if s := n.Stats()[0]; s.Failures != int64(tc.attempts) || s.GaveUp != 1 || s.Delivered != 0 {
				t.Errorf("got %+v, want %d failures, 1 for good", s, tc.attempts)
			}
			if !strings.Contains(logs.String(), "approval notification failed") {
				t.Errorf("log %q lacks the failure", logs.String())
			}
			for _, secret := range []string{"very-secret-path", "webhook-header-secret", rc.srv.URL} {
				if strings.Contains(msg, secret) || strings.Contains(logs.String(), secret) {
					t.Errorf("note %q or log %q shows %q", msg, logs.String(), secret)
				}
			}
		})
	}
}

// TestReceiverDown: connection refused is retried, then given up, and
// the note says why without the URL.
func TestReceiverDown(t *testing.T) {
	rc := newReceiver(t)
	rc.srv.Close()
	var w waits
	l := newNotes()
	n := start(t, notify.Options{Targets: map[string]notify.Target{"treasury": target(rc, notify.FormatJSON)},
		Attempts: 2, After: w.after, Log: l, Logger: slog.New(slog.DiscardHandler)})
	n.Parked(parked("r-1", "trade"))
	msg := l.next(t)
	if !strings.Contains(msg, "connection refused") || strings.Contains(msg, rc.srv.URL) {
		t.Errorf("got note %q, want connection refused without the URL", msg)
	}
}

// TestOverflow: a full queue counts what it cannot hold, reports it once
// in the audit log, and the next message says how many it does not list.
func TestOverflow(t *testing.T) {
	rc := newReceiver(t)
	rc.hold = make(chan struct{})
	l := newNotes()
	var logs bytes.Buffer
	var logMu sync.Mutex
	n := start(t, notify.Options{Targets: map[string]notify.Target{"treasury": target(rc, notify.FormatJSON)},
		Queue: 2, Log: l, Logger: slog.New(slog.NewTextHandler(&lockedWriter{&logs, &logMu}, nil))})
	n.Parked(parked("r-1", "trade"))
	rc.next(t) // r-1 in flight, held
	for _, id := range []string{"r-2", "r-3", "r-4", "r-5", "r-6"} {
		n.Parked(parked(id, "trade"))
	}
	if s := n.Stats()[0]; s.Queued != 2 || s.Dropped != 3 {
		t.Fatalf("got %+v, want 2 queued, 3 dropped", s)
	}
	msg := l.next(t)
	if !strings.Contains(msg, `"treasury" is full`) {
		t.Errorf("got note %q, want the overflow", msg)
	}
	rc.mu.Lock()
	close(rc.hold)
	rc.hold = nil
	rc.mu.Unlock()
	b := decodeJSON(t, rc.next(t))
	if !slices.Equal(b.ids(), []string{"r-2", "r-3"}) || b.Unlisted != 3 {
		t.Errorf("got %v and %d unlisted, want r-2, r-3 and 3 unlisted", b.ids(), b.Unlisted)
	}
	select {
	case m := <-l.added:
		t.Errorf("got a second note %q, want one per overflow", m)
	default:
	}
	logMu.Lock()
	defer logMu.Unlock()
	if c := strings.Count(logs.String(), "queue full"); c != 1 {
		t.Errorf("got %d overflow warnings in %q, want 1", c, logs.String())
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestNewRefuses(t *testing.T) {
	for _, o := range []notify.Options{
		{ConsoleURL: "rulelock.example"},
		{ConsoleURL: "javascript:alert(1)"},
		{ConsoleURL: console, Targets: map[string]notify.Target{"g": {URL: "https://hooks.example/x", Format: "markdown"}}},
		{ConsoleURL: console, Targets: map[string]notify.Target{"g": {URL: "ftp://hooks.example/x", Format: notify.FormatJSON}}},
	} {
		if n, err := notify.New(o); err == nil {
			n.Close()
			t.Errorf("%+v: got no error", o)
		}
	}
}

// TestBatchingBurst: requests parked while the sender lingers after the
// first one go out in one message.
func TestBatchingBurst(t *testing.T) {
	rc := newReceiver(t)
	lingering := make(chan time.Duration, 1)
	fire := make(chan time.Time)
	n := start(t, notify.Options{Targets: map[string]notify.Target{"treasury": target(rc, notify.FormatJSON)},
		Linger: time.Second, After: func(d time.Duration) <-chan time.Time { lingering <- d; return fire }})
	n.Parked(parked("r-1", "trade"))
	if d := <-lingering; d != time.Second {
		t.Fatalf("got a wait of %v, want the linger, 1s", d)
	}
	for _, id := range []string{"r-2", "r-3", "r-4", "r-5"} {
		n.Parked(parked(id, "trade"))
	}
	fire <- time.Time{}
	if got := decodeJSON(t, rc.next(t)).ids(); !slices.Equal(got, []string{"r-1", "r-2", "r-3", "r-4", "r-5"}) {
		t.Errorf("got %v, want r-1 to r-5 in one message", got)
	}
	if s := n.Stats()[0]; s.Queued != 0 {
		t.Errorf("got %+v, want nothing left", s)
	}
}
