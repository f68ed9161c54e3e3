// Package notify tells approvers that requests wait for them: when a
// request parks, each approver group it needs gets a webhook with a link to
// the request in the console.
//
// # Delivery
//
// The gateway hands each parked request to [Notifier.Parked], which only
// queues it: a bounded queue per group, drained by one sender goroutine per
// group, so a slow or dead webhook never delays a decision nor another
// group's notifications. The sender waits Options.Linger after the first
// request, takes everything queued then (up to Options.MaxBatch) and posts
// one message per group: many parks at once, or during a slow delivery, are
// one message. A delivery that fails (a connection error, a timeout, a 408,
// 429 or 5xx reply) is retried after Backoff, doubling up to MaxBackoff, for
// Attempts attempts in all; another 4xx (or a redirect, which is never
// followed) fails at once. A delivery that fails for good is logged
// (slog, and a note entry in the audit log) and counted.
//
// When a group's queue is full, the new request is not queued: it is
// counted as dropped, the overflow is logged once (slog and a note entry)
// until the queue drains, and the next message the group gets says how
// many parked requests it does not list. Neither the oldest nor the newest
// request is dropped silently, and an approver who reads "N more" knows to
// open the console's pending queue, which is the truth; the notification is
// only a nudge.
//
// # Formats
//
// [FormatJSON] posts
//
//	{"event": "approval_requested", "group": "treasury", "requests": [
//	  {"id": "r-1", "agent": "agent-42", "action_type": "trade",
//	   "requirements": [{"rule": "BigTrades", "approvers": 2, "groups": ["treasury"], "message": "..."}],
//	   "expires": "2026-11-22T14:00:00Z", "url": "https://rulelock.example/console/requests/r-1"}],
//	 "unlisted": 0}
//
// [FormatSlack] posts a Slack incoming-webhook body, {"text": "..."}, one
// line per request.
//
// # What a notification says
//
// The request's id, agent, action type, the rules that require approval
// with their messages, the groups and number of approvers, the expiry and
// the link. Never the action's fields, the instruction or the reasoning:
// fields may be sensitive (the log keeps them as salted commitments), and
// a summary that approvers could act on without opening the request would
// invite approving what they did not read. The action type comes from the
// agent, so every string is hostile to Slack's markup: in the Slack format
// each one is escaped (&, <, > as Slack asks, so no <url|text> link and no
// <!channel> mention), control, format (bidi, zero-width, Tag) and other
// characters that are not plainly visible become the visible escapes the
// console and the CLI show (\r, \n, \x1b, \u{202E}), a backtick becomes
// \u{60}, and the result is shown as inline code, where *bold*, _italic_ and @mentions are not
// interpreted. Long strings are cut with a visible "…(N more bytes)".
//
// The webhook URL and headers are secrets (a Slack webhook URL is its own
// credential): they never appear in logs, notes or errors, which name the
// group only.
package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/policy"
)

// Format is the body of a group's webhook.
type Format string

// The formats.
const (
	FormatJSON  Format = "json"  // the generic JSON body (package doc)
	FormatSlack Format = "slack" // a Slack incoming-webhook body: {"text": ...}
)

// Target is where one group's notifications go.
type Target struct {
	URL     string // a secret: never logged
	Format  Format
	Headers http.Header // sent with each post; secrets: never logged
}

// LogValue keeps the URL and headers out of logs.
func (t Target) LogValue() slog.Value {
	return slog.GroupValue(slog.String("format", string(t.Format)), slog.String("url", "[redacted]"))
}

// Request is a parked request as notifications show it.
type Request struct {
	ID           string
	Agent        string
	ActionType   string // the agent's: hostile
	Requirements []policy.Requirement
	Expires      time.Time
}

// Recorder appends note entries to the audit log.
type Recorder interface {
	Append(context.Context, *audit.Entry) (audit.Receipt, error)
}

// Options configure a Notifier. The zero value of each field but Targets
// and ConsoleURL works.
type Options struct {
	// Targets are the webhooks by approver group. A parked request goes to
	// the groups its requirements name; a requirement naming none (any
	// approver may sign) goes to every group.
	Targets map[string]Target
	// ConsoleURL is the console's base URL; a request's link is
	// ConsoleURL + "/console/requests/" + id.
	ConsoleURL string
	Queue      int           // requests queued per group (default 256)
	MaxBatch   int           // requests per message (default 50)
	Attempts   int           // attempts per message (default 8)
	Backoff    time.Duration // the wait after the first failed attempt (default 1s)
	MaxBackoff time.Duration // the longest wait between attempts (default 1m)
	Timeout    time.Duration // one attempt (default 10s)
	// Linger is how long a group's sender waits, after a request arrives
	// in its empty queue, for more to send in the same message (0: none).
	Linger time.Duration
	Client *http.Client // default: no redirects, Timeout per attempt
	Log    Recorder     // where notes go; nil for none
	Logger *slog.Logger // default slog.Default()
	Now    func() time.Time
	// After waits between attempts (default time.After); tests inject it.
	After func(time.Duration) <-chan time.Time
	// EngineVersion is written in note entries.
	EngineVersion string
}

// Stats are one group's counters since the start.
type Stats struct {
	Group     string
	Queued    int   // requests waiting now
	Delivered int64 // messages delivered
	Failures  int64 // attempts that failed (each retry counts)
	GaveUp    int64 // messages that failed for good
	Dropped   int64 // requests not queued because the queue was full
}

// Notifier queues parked requests and delivers them in the background.
type Notifier struct {
	opts   Options
	groups map[string]*group
	names  []string // sorted
	alerts chan string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// group is one approver group's queue and counters.
type group struct {
	name   string
	target Target
	wake   chan struct{} // cap 1

	mu          sync.Mutex
	queue       []Request
	unlisted    int  // dropped since the last message
	overflowing bool // the overflow was reported; reset when the queue drains

	delivered, failures, gaveUp, dropped atomic.Int64
}

// New starts a Notifier; Close stops it.
func New(opts Options) (*Notifier, error) {
	if opts.ConsoleURL == "" {
		return nil, errors.New("notify: a console URL is required")
	}
	u, err := url.Parse(opts.ConsoleURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("notify: console URL %q: want an absolute http(s) URL without query or fragment", opts.ConsoleURL)
	}
	opts.ConsoleURL = u.String()
	for len(opts.ConsoleURL) > 0 && opts.ConsoleURL[len(opts.ConsoleURL)-1] == '/' {
		opts.ConsoleURL = opts.ConsoleURL[:len(opts.ConsoleURL)-1]
	}
	setDefaults(&opts)
	n := &Notifier{opts: opts, groups: map[string]*group{}, alerts: make(chan string, len(opts.Targets))}
	for name, t := range opts.Targets {
		if t.Format != FormatJSON && t.Format != FormatSlack {
			return nil, fmt.Errorf("notify: group %q: format %q: want json or slack", name, t.Format)
		}
		if tu, err := url.Parse(t.URL); err != nil || (tu.Scheme != "http" && tu.Scheme != "https") || tu.Host == "" {
			return nil, fmt.Errorf("notify: group %q: the webhook URL is not an absolute http(s) URL", name)
		}
		n.groups[name] = &group{name: name, target: t, wake: make(chan struct{}, 1)}
		n.names = append(n.names, name)
	}
	slices.Sort(n.names)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	for _, name := range n.names {
		n.wg.Go(func() { n.send(n.groups[name]) })
	}
	n.wg.Go(n.report)
	return n, nil
}

func setDefaults(o *Options) {
	if o.Queue <= 0 {
		o.Queue = 256
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 50
	}
	if o.Attempts <= 0 {
		o.Attempts = 8
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.After == nil {
		o.After = time.After
	}
}

// Close stops the senders; what is still queued is not sent.
func (n *Notifier) Close() {
	n.cancel()
	n.wg.Wait()
}

// Parked queues r for each group it needs. It never blocks: a full queue
// drops r, counted and reported (package doc).
func (n *Notifier) Parked(r Request) {
	for _, g := range n.targets(r) {
		g.mu.Lock()
		full := len(g.queue) >= n.opts.Queue
		alert := false
		if full {
			g.unlisted++
			g.dropped.Add(1)
			alert = !g.overflowing
			g.overflowing = true
		} else {
			g.queue = append(g.queue, r)
		}
		g.mu.Unlock()
		if alert {
			select {
			case n.alerts <- g.name:
			default: // one alert per group is already waiting
			}
		}
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
}

// targets are the groups r goes to.
func (n *Notifier) targets(r Request) []*group {
	var out []*group
	add := func(g *group) {
		if g != nil && !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	for _, req := range r.Requirements {
		if len(req.Groups) == 0 {
			for _, name := range n.names {
				add(n.groups[name])
			}
		}
		for _, name := range req.Groups {
			add(n.groups[name])
		}
	}
	return out
}

// Stats returns each group's counters, by group name.
func (n *Notifier) Stats() []Stats {
	out := make([]Stats, 0, len(n.names))
	for _, name := range n.names {
		g := n.groups[name]
		g.mu.Lock()
		q := len(g.queue)
		g.mu.Unlock()
		out = append(out, Stats{Group: name, Queued: q, Delivered: g.delivered.Load(), Failures: g.failures.Load(),
			GaveUp: g.gaveUp.Load(), Dropped: g.dropped.Load()})
	}
	return out
}

// URL is the console link of request id.
func (n *Notifier) URL(id string) string {
	return n.opts.ConsoleURL + "/console/requests/" + url.PathEscape(id)
}

// send delivers g's queue until Close.
func (n *Notifier) send(g *group) {
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-g.wake:
		}
		if n.opts.Linger > 0 {
			select {
			case <-n.ctx.Done():
				return
			case <-n.opts.After(n.opts.Linger):
			}
		}
		for {
			batch, unlisted := n.take(g)
			if len(batch) == 0 && unlisted == 0 {
				break
			}
			n.deliver(g, batch, unlisted)
			if n.ctx.Err() != nil {
				return
			}
		}
	}
}

// take removes up to MaxBatch requests from g's queue, with the number
// dropped since the last message.
func (n *Notifier) take(g *group) ([]Request, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := min(len(g.queue), n.opts.MaxBatch)
	batch := slices.Clone(g.queue[:k])
	g.queue = slices.Delete(g.queue, 0, k)
	unlisted := g.unlisted
	g.unlisted = 0
	if len(g.queue) == 0 {
		g.overflowing = false
	}
	return batch, unlisted
}

// deliver posts one message, retrying with backoff.
func (n *Notifier) deliver(g *group, batch []Request, unlisted int) {
	body, err := n.body(g, batch, unlisted)
	if err != nil { // cannot happen with these types
		panic(err)
	}
	wait := n.opts.Backoff
	var why string
	for attempt := 1; ; attempt++ {
		var retry bool
		why, retry = n.post(g.target, body)
		if why == "" {
			g.delivered.Add(1)
			return
		}
		g.failures.Add(1)
		if !retry || attempt >= n.opts.Attempts {
			n.gaveUp(g, batch, unlisted, attempt, why)
			return
		}
		select {
		case <-n.ctx.Done():
			return
		case <-n.opts.After(wait):
		}
		wait = min(2*wait, n.opts.MaxBackoff)
	}
}

// post makes one attempt. It returns why it failed ("" when delivered)
// and whether to try again; why never holds the URL.
func (n *Notifier) post(t Target, body []byte) (why string, retry bool) {
	ctx, cancel := context.WithTimeout(n.ctx, n.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
	if err != nil {
		return "invalid request", false
	}
	for k, vs := range t.Headers {
		req.Header[k] = slices.Clone(vs)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.opts.Client.Do(req)
	if err != nil {
		return describe(err), true
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return "", false
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return fmt.Sprintf("HTTP %d", c), true
	default:
		return fmt.Sprintf("HTTP %d", c), false
	}
}

// describe names a transport error without its URL (a *url.Error holds
// it, and a webhook URL is a credential).
func describe(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "connection reset"
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return "name resolution failed"
	}
	return "connection error"
}

// gaveUp reports a message that failed for good.
func (n *Notifier) gaveUp(g *group, batch []Request, unlisted, attempts int, why string) {
	g.gaveUp.Add(1)
	ids := make([]string, len(batch))
	for i, r := range batch {
		ids[i] = r.ID
	}
	n.opts.Logger.Warn("approval notification failed", slog.String("group", g.name), slog.Int("attempts", attempts),
		slog.String("error", why), slog.Any("requests", ids), slog.Int("unlisted", unlisted))
	n.note(fmt.Sprintf("notification to approver group %q failed after %d attempt(s) (%s): %d parked request(s) not notified: %v",
		g.name, attempts, why, len(batch)+unlisted, ids))
}

// report logs queue overflows, off the decision's path.
func (n *Notifier) report() {
	for {
		select {
		case <-n.ctx.Done():
			return
		case name := <-n.alerts:
			n.opts.Logger.Warn("approval notification queue full: parked requests are counted, not listed",
				slog.String("group", name), slog.Int("queue", n.opts.Queue))
			n.note(fmt.Sprintf("notification queue of approver group %q is full (%d): further parked requests are counted, not listed, until it drains; see the console's pending queue",
				name, n.opts.Queue))
		}
	}
}

// note appends a note entry to the audit log, when there is one.
func (n *Notifier) note(msg string) {
	if n.opts.Log == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(n.ctx), 30*time.Second)
	defer cancel()
	_, err := n.opts.Log.Append(ctx, &audit.Entry{Kind: audit.KindNote, Time: n.opts.Now().UTC(),
		EngineVersion: n.opts.EngineVersion, Message: msg})
	if err != nil {
		n.opts.Logger.Error("record notification note", slog.String("error", err.Error()))
	}
}
