package console

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/internal/search"
)

const bigTransfer = `{"type":"transfer","amount":20000,"to":"acct-9"}`

// Signed out, every page sends the browser to the sign-in page, and an
// agent's bearer token opens nothing (auth.go refuses it outright);
// htmx's background requests are told to reload there instead.
func TestSignedOutGoesToLogin(t *testing.T) {
	e := newEnv(t)
	id := e.submit("agent-7", bigTransfer, "pay", "").RequestID
	c := e.client("")
	for _, path := range []string{"/console/", "/console/requests/" + id, "/console/log", "/console/log?agent=agent-7", "/console/log/0"} {
		for _, bearer := range []string{"", "Bearer agent-token"} {
			req, _ := http.NewRequest("GET", e.hs.URL+path, nil)
			if bearer != "" {
				req.Header.Set("Authorization", bearer)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case bearer != "" && (resp.StatusCode == http.StatusOK || strings.Contains(string(b), id)):
				t.Errorf("GET %s with a bearer token: got %s %q, want nothing", path, resp.Status, b)
			case bearer == "" && (resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login"):
				t.Errorf("GET %s: got %s to %q, want 303 to /console/login", path, resp.Status, resp.Header.Get("Location"))
			}
		}
	}
	req, _ := http.NewRequest("GET", e.hs.URL+"/console/", nil)
	req.Header.Set("HX-Request", "true")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("HX-Redirect") != "/console/login" {
		t.Errorf("htmx GET /console/: got %s HX-Redirect %q, want 401 to /console/login", resp.Status, resp.Header.Get("HX-Redirect"))
	}
}

// A person in the config with neither role gets nothing but a refusal,
// which is recorded.
func TestNoRoleGetsNothing(t *testing.T) {
	e := newEnv(t)
	id := e.submit("agent-7", bigTransfer, "pay acct-9", "").RequestID
	c := e.client("nobody@example.com")
	for _, path := range []string{"/console/", "/console/requests/" + id, "/console/log?request=" + id, "/console/log/0"} {
		status, _, body := e.get(c, path)
		if status != http.StatusForbidden || strings.Contains(body, id) || strings.Contains(body, "acct-9") {
			t.Errorf("GET %s: got %d %q, want 403 without the request", path, status, body)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.refusals) != 4 || e.refusals[0] != "nobody@example.com no_console_role" {
		t.Errorf("got refusals %q, want 4 of nobody@example.com no_console_role", e.refusals)
	}
}

var (
	inlineScript = regexp.MustCompile(`<script(?:\s[^>]*)?>`)
	inlineStyle  = regexp.MustCompile(`(?i)<style|\sstyle=|\son[a-z]+=|javascript:`)
)

// checkPage checks what every page must have: the security headers, the
// CSRF meta tag, the passkey script, and nothing inline (the CSP would
// block it) or from another origin.
func checkPage(t *testing.T, path string, h http.Header, body string) {
	t.Helper()
	if got := h.Get("Content-Security-Policy"); got != csp {
		t.Errorf("%s: Content-Security-Policy %q, want %q", path, got, csp)
	}
	if h.Get("Cache-Control") != "no-store" || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("%s: headers %v", path, h)
	}
	tok := regexp.MustCompile(`<meta name="csrf-token" content="([A-Za-z0-9_-]{43})">`).FindStringSubmatch(body)
	if tok == nil {
		t.Errorf("%s: no csrf-token meta tag", path)
	} else if !strings.Contains(body, `<form method="post" action="/console/logout" class="signout">
      <input type="hidden" name="csrf" value="`+tok[1]+`">`) {
		t.Errorf("%s: no sign-out form carrying the CSRF token", path)
	}
	if !strings.Contains(body, `<script src="/console/static/passkey.js" defer></script>`) {
		t.Errorf("%s: no passkey.js script tag", path)
	}
	for _, tag := range inlineScript.FindAllString(body, -1) {
		if !strings.Contains(tag, `src="/console/static/`) {
			t.Errorf("%s: script %s is not one of the console's files", path, tag)
		}
	}
	if m := inlineStyle.FindString(body); m != "" {
		t.Errorf("%s: inline style or handler %q", path, m)
	}
	if strings.Contains(body, "http://") || strings.Contains(body, "https://") {
		t.Errorf("%s: refers to another origin", path)
	}
}

// The queue and a pending request, for an approver and for an auditor:
// the same facts; vote forms for the approver only.
func TestQueueAndRequest(t *testing.T) {
	e := newEnv(t)
	id := e.submit("agent-7", bigTransfer, "Pay invoice 1234", "It is due today").RequestID
	e.vote("alice@example.com", id, approval.Approve, "")
	approveForm := `<form class="vote" data-request="` + id + `" data-verdict="approve"><button type="submit">Approve with passkey</button></form>`
	rejectForm := `<form class="vote" data-request="` + id + `" data-verdict="reject"><input name="reason" required maxlength="280"`
	for _, who := range []string{"bob@example.com", "audrey@example.com"} {
		c := e.client(who)
		status, h, body := e.get(c, "/console/")
		checkPage(t, "/console/", h, body)
		for _, want := range []string{`href="/console/requests/` + id + `"`, ">20000<", `&#34;transfer&#34;`, "agent-7", "alice@example.com", `<td data-label="Still needed"><div><strong>1</strong> more from <span class="mono">treasury</span> <span class="muted small">(of 2)</span></div></td>`, "Signed in as <strong>" + who} {
			if status != 200 || !strings.Contains(body, want) {
				t.Errorf("%s: queue: got %d, want %q in\n%s", who, status, want, body)
			}
		}
		status, h, body = e.get(c, "/console/requests/"+id)
		checkPage(t, "request", h, body)
		for _, want := range []string{"<th class=\"mono\">amount</th><td class=\"mono value\">20000</td>", `<th class="mono">to</th><td class="mono value">&#34;acct-9&#34;</td>`,
			"NoHighValueTransfers", "Transfers over $10,000 require two treasurers", "The agent says", "Pay invoice 1234", "It is due today",
			"1 so far", "1 more", "require_approval"} {
			if status != 200 || !strings.Contains(body, want) {
				t.Errorf("%s: request page: got %d, want %q", who, status, want)
			}
		}
		approver := who == "bob@example.com"
		if got := strings.Contains(body, approveForm) && strings.Contains(body, rejectForm); got != approver {
			t.Errorf("%s: vote forms shown %v, want %v", who, got, approver)
		}
		if !approver && strings.Contains(body, `class="vote"`) {
			t.Errorf("%s: an auditor sees a vote form", who)
		}
	}
	// Who may still approve: bob, not alice (she voted); the page refreshes
	// its live parts in place every five seconds, and reloads whole once
	// the request is no longer pending.
	c := e.client("audrey@example.com")
	_, _, body := e.get(c, "/console/requests/"+id)
	for _, want := range []string{`Can still approve: <span class="mono">bob@example.com</span></div>`,
		`<div id="poll" hidden hx-get="/console/requests/` + id + `?poll=pending" hx-trigger="every 5s" hx-select="#poll" hx-select-oob="#summary,#votes-live,#story" hx-swap="outerHTML"></div>`,
		`id="summary"`, `<div id="votes-live">`, `id="story"`} {
		if !strings.Contains(body, want) {
			t.Errorf("request page: want %q in\n%s", want, body)
		}
	}
	if strings.Contains(body, `Can still approve: <span class="mono">alice`) {
		t.Errorf("request page: alice, who voted, is listed as still able to approve")
	}
	poll := func() (int, string) {
		req, _ := http.NewRequest("GET", e.hs.URL+"/console/requests/"+id+"?poll=pending", nil)
		req.Header.Set("HX-Request", "true")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("HX-Refresh")
	}
	if status, refresh := poll(); status != 200 || refresh != "" {
		t.Errorf("poll while pending: got %d HX-Refresh %q, want 200 and none", status, refresh)
	}
	e.vote("bob@example.com", id, approval.Approve, "")
	if status, refresh := poll(); status != 200 || refresh != "true" {
		t.Errorf("poll once approved: got %d HX-Refresh %q, want 200 and true", status, refresh)
	}
	_, _, body = e.get(c, "/console/requests/"+id)
	if !strings.Contains(body, `?poll=done"`) || strings.Contains(body, "Can still approve") {
		t.Errorf("the finished request's page: want a poll marked done and nobody still wanted")
	}
	// alice voted already, but may still see the forms (the gateway refuses
	// a second vote); the requesting agent never would.
	_, _, body = e.get(e.client("alice@example.com"), "/console/requests/nosuch")
	if !strings.Contains(body, "404") {
		t.Errorf("unknown request: got %s", body)
	}
}

// A finished request's page tells its whole story from the log: the
// decision, each approval, a refused vote, the approved re-decision, the
// outcome, linked to their entries; a rejected one, who rejected it and why.
func TestStory(t *testing.T) {
	e := newEnv(t)
	id := e.submit("agent-7", bigTransfer, "pay", "").RequestID
	e.vote("alice@example.com", id, approval.Approve, "")
	// alice again: refused (already voted), and logged as a note.
	pr := e.pending(id)
	b, _ := approval.Sign(pr.Statement(approval.Approve, ""), e.signers["alice@example.com"])
	if _, err := e.gw.Approve(t.Context(), "alice@example.com", id, b); err == nil {
		t.Fatal("a second vote by alice was accepted")
	}
	e.vote("bob@example.com", id, approval.Approve, "")
	rej := e.submit("agent-7", `{"type":"transfer","amount":50000,"to":"acct-666"}`, "pay", "").RequestID
	e.vote("bob@example.com", rej, approval.Reject, "unknown payee")

	c := e.client("audrey@example.com")
	status, _, body := e.get(c, "/console/requests/"+id)
	if status != 200 {
		t.Fatalf("got %d %s", status, body)
	}
	for _, want := range []string{"require_approval", ">approve<", "refused approve", ">approved<", "outcome ok", ">executed<", "approved, outcome ok",
		"<th class=\"mono\">amount</th><td class=\"mono value\">20000</td>", "2 so far"} {
		if !strings.Contains(body, want) {
			t.Errorf("story of %s: want %q in\n%s", id, want, body)
		}
	}
	if strings.Contains(body, `class="vote"`) {
		t.Errorf("a finished request offers votes")
	}
	links := regexp.MustCompile(`href="/console/log/(\d+)"`).FindAllStringSubmatch(body, -1)
	if len(links) != 7 { // parked decision, 2 approvals, the refused vote, approved decision, outcome, executed
		t.Errorf("story links %d entries, want 7: %q", len(links), links)
	}
	_, _, body = e.get(c, "/console/requests/"+rej)
	for _, want := range []string{">reject<", "reason: &#34;unknown payee&#34;", "rejected", "bob@example.com"} {
		if !strings.Contains(body, want) {
			t.Errorf("story of %s: want %q", rej, want)
		}
	}
}

// The entry page checks the inclusion proof itself: verified for a covered
// entry, "not covered yet" past the checkpoint.
func TestEntryProof(t *testing.T) {
	e := newEnv(t)
	e.submit("agent-7", `{"type":"transfer","amount":5,"to":"acct-1"}`, "pay", "")
	e.checkpoint()
	e.submit("agent-7", `{"type":"transfer","amount":6,"to":"acct-1"}`, "pay", "")
	c := e.client("audrey@example.com")
	status, h, body := e.get(c, "/console/log/0")
	checkPage(t, "/console/log/0", h, body)
	for _, want := range []string{`<section class="panel proof verified" id="proof">`, "<span class=\"verdict\">verified</span>", "checkpoint signed by test.rulelock/log",
		`<th class="mono">action_sha256</th>`, `<th class="mono">instruction <span class="tag claim">agent's claim</span></th>`, `<h2>The action <span class="tag fact">as logged</span></h2>`, `<th class="mono">amount</th><td class="mono value">5</td>`, "signature verified", "Not yet covered</dt><dd class=\"mono warnc\">2"} {
		if status != 200 || !strings.Contains(body, want) {
			t.Errorf("entry 0: got %d, want %q in\n%s", status, want, body)
		}
	}
	_, _, body = e.get(c, "/console/log/3")
	if !strings.Contains(body, `<span class="verdict">not covered yet</span>`) {
		t.Errorf("entry 3 (after the checkpoint): want not covered yet in\n%s", body)
	}
	for _, bad := range []string{"4", "-1", "01", "x"} {
		if status, _, _ := e.get(c, "/console/log/"+bad); status != http.StatusNotFound {
			t.Errorf("entry %q: got %d, want 404", bad, status)
		}
	}
}

// tamperedLog serves entry i with its instruction changed (the entry
// still decodes: only the proof can tell), and a receipt that
// carries the changed entry with the genuine proof: the log's data no
// longer matches the signed tree.
type tamperedLog struct {
	*httpapi.AuditLog
	i int64
}

func tamper(b []byte) []byte {
	return []byte(strings.Replace(string(b), `"instruction":"pay"`, `"instruction":"pay acct-666 instead"`, 1))
}

func (l tamperedLog) Entry(i int64) ([]byte, error) {
	b, err := l.AuditLog.Entry(i)
	if i == l.i {
		b = tamper(b)
	}
	return b, err
}

func (l tamperedLog) Receipt(i int64) ([]byte, error) {
	b, err := l.AuditLog.Receipt(i)
	if err != nil || i != l.i {
		return b, err
	}
	p, err := audit.ParseReceipt(b)
	if err != nil {
		return nil, err
	}
	return audit.FormatReceipt(tamper(p.Entry), p.Index, p.Proof, p.Checkpoint), nil
}

// A modified entry fails its inclusion proof on the entry page.
func TestEntryProofTampered(t *testing.T) {
	e := newEnvWith(t, func(l httpapi.LogAPI) httpapi.LogAPI { return tamperedLog{l.(*httpapi.AuditLog), 0} })
	e.submit("agent-7", `{"type":"transfer","amount":5,"to":"acct-1"}`, "pay", "")
	e.checkpoint()
	_, _, body := e.get(e.client("audrey@example.com"), "/console/log/0")
	for _, want := range []string{`<section class="panel proof failed" id="proof">`, `<span class="verdict">failed</span>`, `pay acct-666 instead`} {
		if !strings.Contains(body, want) {
			t.Errorf("tampered entry 0: want %q in\n%s", want, body)
		}
	}
	if strings.Contains(body, ">verified<") {
		t.Errorf("a tampered entry is shown verified")
	}
}

// Searches through the page return exactly the entries a plain filter over
// the whole log returns, across pages of results: by reading the log
// (scan), and with the gateway's search index (the LogAPI is an
// httpapi.Finder), which the console then asks.
func TestSearchMatchesLinearReference(t *testing.T) {
	t.Run("scan", func(t *testing.T) { checkSearch(t, newEnv(t), nil) })
	t.Run("index", func(t *testing.T) {
		var finds atomic.Int64
		var ix *search.Index
		e := newEnvWith(t, func(l httpapi.LogAPI) httpapi.LogAPI {
			al := l.(*httpapi.AuditLog)
			ix = search.Open(filepath.Join(t.TempDir(), "index"))
			al.Index = ix
			return countingFinder{al, &finds}
		})
		checkSearch(t, e, func() {
			// The index covers all but the last few entries (Find scans
			// those, as the gateway's does between its updates).
			if _, err := ix.Update(t.Context(), e.log); err != nil {
				t.Fatal(err)
			}
			e.submit("agent-1", `{"type":"refund","amount":7,"to":"acct-2"}`, "n", "")
		})
		if finds.Load() == 0 {
			t.Error("the console never asked the index")
		}
	})
}

// countingFinder counts the searches that reach the index.
type countingFinder struct {
	*httpapi.AuditLog
	n *atomic.Int64
}

func (c countingFinder) Find(q search.Query) ([]search.Result, error) {
	c.n.Add(1)
	return c.AuditLog.Find(q)
}

// checkSearch fills e's log, runs prepare (if any), and checks that every
// search the console answers, page after page, finds exactly the entries
// a reference filter over every entry keeps.
func checkSearch(t *testing.T, e *testEnv, prepare func()) {
	for i := range 150 {
		agent := "agent-" + strconv.Itoa(i%3)
		typ := []string{"transfer", "refund"}[i%5/4]
		amount := []int{5, 20000, 7}[i%3]
		e.submit(agent, `{"type":"`+typ+`","amount":`+strconv.Itoa(amount)+`,"to":"acct-`+strconv.Itoa(i%4)+`"}`, "n", "")
	}
	if prepare != nil {
		prepare()
	}
	e.checkpoint()
	raws, err := e.log.ReadEntries(0, e.log.Size())
	if err != nil {
		t.Fatal(err)
	}
	var all []*audit.Entry
	for _, r := range raws {
		x, err := audit.DecodeEntry(r)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, x)
	}
	mid := all[len(all)/2].Time
	reference := func(keep func(x *audit.Entry) bool) []int64 {
		var out []int64
		for i, x := range all {
			if keep(x) {
				out = append(out, int64(i))
			}
		}
		return out
	}
	hasType := func(x *audit.Entry, typ string) bool {
		return strings.HasPrefix(x.Action.Text, `{`) && strings.Contains(x.Action.Text, `"type":"`+typ+`"`)
	}
	hasRule := func(x *audit.Entry, name string) bool {
		return slices.ContainsFunc(x.Rules, func(r audit.Rule) bool { return r.Name == name })
	}
	someID := all[1].RequestID
	cases := []struct {
		query url.Values
		want  []int64
	}{
		{url.Values{"agent": {"agent-1"}}, reference(func(x *audit.Entry) bool { return x.Agent == "agent-1" })},
		{url.Values{"type": {"refund"}}, reference(func(x *audit.Entry) bool { return hasType(x, "refund") })},
		{url.Values{"decision": {"allow"}}, reference(func(x *audit.Entry) bool { return x.Decision == "allow" })},
		{url.Values{"rule": {"NoHighValueTransfers"}, "agent": {"agent-1"}}, reference(func(x *audit.Entry) bool {
			return hasRule(x, "NoHighValueTransfers") && x.Agent == "agent-1"
		})},
		{url.Values{"request": {someID}}, reference(func(x *audit.Entry) bool { return x.RequestID == someID })},
		{url.Values{"from": {mid.Format("2006-01-02T15:04:05.999999999Z07:00")}, "type": {"transfer"}}, reference(func(x *audit.Entry) bool {
			return !x.Time.Before(mid) && hasType(x, "transfer")
		})},
		{url.Values{"to": {mid.Format("2006-01-02T15:04:05.999999999Z07:00")}}, reference(func(x *audit.Entry) bool { return x.Time.Before(mid) })},
		{url.Values{"agent": {"nobody"}}, nil},
		{url.Values{"from": {all[0].Time.Format("2006-01-02T15:04:05.999999999Z07:00")}}, reference(func(*audit.Entry) bool { return true })},
	}
	c := e.client("audrey@example.com")
	index := regexp.MustCompile(`<td data-label="Entry"><a class="mono" href="/console/log/(\d+)">`)
	next := regexp.MustCompile(`<a href="/console/log\?([^"]+)">Next matches</a>`)
	for _, tc := range cases {
		var got []int64
		q := tc.query.Encode()
		for pages := 0; q != ""; pages++ {
			status, h, body := e.get(c, "/console/log?"+q)
			if pages == 0 {
				checkPage(t, "/console/log", h, body)
			}
			if status != 200 || pages > 10 {
				t.Fatalf("%s: got %d on page %d (%s)", tc.query.Encode(), status, pages, q)
			}
			for _, m := range index.FindAllStringSubmatch(body, -1) {
				n, _ := strconv.ParseInt(m[1], 10, 64)
				got = append(got, n)
			}
			q = ""
			if m := next.FindStringSubmatch(body); m != nil {
				q = strings.ReplaceAll(m[1], "&amp;", "&")
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got entries %v, want %v", tc.query.Encode(), got, tc.want)
		}
	}
	if n := len(cases[len(cases)-1].want); n <= 2*pageSize {
		t.Errorf("the search for everything has %d results: want more than two pages (%d) to test paging", n, 2*pageSize)
	}
	for _, bad := range []string{"from=yesterday", "after=-1", "agent=a&agent=b", "rule=" + strings.Repeat("x", maxParam+1)} {
		if status, _, body := e.get(c, "/console/log?"+bad); status != http.StatusBadRequest || !strings.Contains(body, `class="danger"`) {
			t.Errorf("%s: got %d, want 400 with the error shown", bad, status)
		}
	}
}

// The static files are served with their content types, revalidated by
// ETag; nothing else is.
func TestStatic(t *testing.T) {
	e := newEnv(t)
	c := e.client("")
	for name, ctype := range map[string]string{"console.css": "text/css; charset=utf-8", "htmx.min.js": "text/javascript; charset=utf-8", "passkey.js": "text/javascript; charset=utf-8"} {
		status, h, body := e.get(c, "/console/static/"+name)
		want, _ := staticFS.ReadFile("static/" + name)
		if status != 200 || h.Get("Content-Type") != ctype || body != string(want) || h.Get("ETag") == "" || h.Get("Content-Security-Policy") != csp {
			t.Errorf("%s: got %d %q etag %q (%d bytes), want 200 %s (%d bytes)", name, status, h.Get("Content-Type"), h.Get("ETag"), len(body), ctype, len(want))
		}
		req, _ := http.NewRequest("GET", e.hs.URL+"/console/static/"+name, nil)
		req.Header.Set("If-None-Match", h.Get("ETag"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("%s with its ETag: got %s, want 304", name, resp.Status)
		}
	}
	for _, name := range []string{"nosuch.js", "..%2fconsole.go", "%2e%2e/pages.go"} {
		if status, _, _ := e.get(c, "/console/static/"+name); status != http.StatusNotFound {
			t.Errorf("%s: got %d, want 404", name, status)
		}
	}
}

// Nothing is cut: a 6,000-character memo is on the pending request's page
// whole, and so is a long reasoning. Once the request is finished, the page is built from the log,
// which holds fields that long by digest: the page says so, and does not
// pretend the action cannot be shown or the reasoning was empty.
func TestLongFields(t *testing.T) {
	e := newEnv(t)
	memo := strings.Repeat("0123456789", 600) + "END"
	reasoning := strings.Repeat("because ", 700)
	id := e.submit("agent-7", `{"type":"transfer","amount":20000,"to":"acct-9","memo":"`+memo+`"}`, "pay", reasoning).RequestID
	c := e.client("alice@example.com")
	_, _, body := e.get(c, "/console/requests/"+id)
	if !strings.Contains(body, `<td class="mono value">&#34;`+memo+`&#34;</td>`) || !strings.Contains(body, reasoning[:len(reasoning)-1]) {
		t.Errorf("the pending request's page cuts the memo or the reasoning")
	}
	e.vote("bob@example.com", id, approval.Reject, "too long")
	_, _, body = e.get(c, "/console/requests/"+id)
	for _, want := range []string{"the log holds the action by its digest (sha256:", "the log holds the reasoning by its digest (sha256:", "rejected"} {
		if !strings.Contains(body, want) {
			t.Errorf("finished request: want %q in\n%s", want, body)
		}
	}
	if strings.Contains(body, "Cannot be shown") {
		t.Errorf("finished request: an action held by digest is shown as malformed")
	}
	// The decision's entry page lists the fields held by digest, labelled.
	m := regexp.MustCompile(`href="/console/log/(\d+)">#\d+</a></td>\s*<td data-label="Time" class="mono small">[^<]*</td>\s*<td data-label="Kind">decision</td>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("finished request: no decision entry in its story:\n%s", body)
	}
	_, _, body = e.get(c, "/console/log/"+m[1])
	for _, want := range []string{`<section class="panel held" id="held">`, `<li><span class="mono">action</span>: the log holds the action by its digest (sha256:`,
		`<li><span class="mono">reasoning</span>: the log holds the reasoning by its digest (sha256:`} {
		if !strings.Contains(body, want) {
			t.Errorf("entry %s: want %q in\n%s", m[1], want, body)
		}
	}

	// Only the reasoning held by digest: the action is still shown.
	id = e.submit("agent-7", bigTransfer, "pay", reasoning).RequestID
	e.vote("bob@example.com", id, approval.Reject, "no")
	_, _, body = e.get(c, "/console/requests/"+id)
	for _, want := range []string{"the log holds the reasoning by its digest (sha256:", `<th class="mono">to</th><td class="mono value">&#34;acct-9&#34;</td>`} {
		if !strings.Contains(body, want) {
			t.Errorf("finished request, long reasoning: want %q in\n%s", want, body)
		}
	}
	if strings.Contains(body, "the log holds the action") {
		t.Errorf("finished request, long reasoning: the inline action is said to be held by digest")
	}
}

// Every field the log holds other than inline is named, in the entry's
// order, with its digest and size or its commitment: never left out.
func TestHeldFields(t *testing.T) {
	d := audit.Digest{1, 2, 3}
	e := &audit.Entry{Kind: audit.KindOutcome, Action: audit.Text(`{"type":"transfer"}`), Instruction: audit.Field{Commitment: d},
		Result: audit.Field{Digest: d, Size: 70000}}
	got := heldFields(e)
	want := []heldField{
		{"instruction", "the instruction is sensitive: the log holds a commitment to it (hmac:" + d.String() + "), not the value"},
		{"result", "the log holds the result by its digest (sha256:" + d.String() + ", 70000 bytes), not inline"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// badProver serves consistency proofs with one hash changed: the proofs
// of a log that was rewritten.
type badProver struct{ *httpapi.AuditLog }

func (l badProver) ConsistencyProof(m, n int64) (tlog.TreeProof, error) {
	p, err := l.AuditLog.ConsistencyProof(m, n)
	if err == nil && len(p) > 0 {
		p[0][0] ^= 1
	}
	return p, err
}

// The console checks each checkpoint it is shown against the newest it has
// seen: the first is remembered (across restarts), a newer one must extend
// it and one of the same size must be the same tree; a proof that does not
// check fails, on the entry page and in the log's status, and the newest
// seen stays.
func TestCheckpointConsistency(t *testing.T) {
	e := newEnv(t)
	e.submit("agent-7", `{"type":"transfer","amount":5,"to":"acct-1"}`, "pay", "")
	e.checkpoint()
	c := e.client("audrey@example.com")
	_, _, body := e.get(c, "/console/log")
	first := e.log.Size()
	if !strings.Contains(body, `<dd id="status-consistency"><span class="ok">first seen</span>`) {
		t.Fatalf("log page: want the first checkpoint seen in\n%s", body)
	}
	e.submit("agent-7", `{"type":"transfer","amount":6,"to":"acct-1"}`, "pay", "")
	e.checkpoint()
	_, h, body := e.get(c, "/console/log/0")
	checkPage(t, "/console/log/0", h, body)
	want := fmt.Sprintf(`<section class="panel proof verified" id="consistency">
  <h2>Consistency with the newest checkpoint seen: <span class="verdict">verified</span></h2>
  <p>extends the newest checkpoint seen before (%d entries): proved append-only</p>`, first)
	if !strings.Contains(body, want) {
		t.Fatalf("entry 0: want\n%s\nin\n%s", want, body)
	}
	if !strings.Contains(body, fmt.Sprintf(`<span class="ok">verified</span>: the same tree as the newest checkpoint seen (%d entries)`, e.log.Size())) {
		t.Errorf("entry 0's log status: want the same tree as the newest seen in\n%s", body)
	}

	// A console started again on the same data directory remembers it.
	again, err := New(e.srv.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := again.seen.cp.Size; got != e.log.Size() {
		t.Errorf("after a restart the newest checkpoint seen has %d entries, want %d", got, e.log.Size())
	}
	if err := again.proveConsistency(audit.Checkpoint{Size: 3, Root: tlog.Hash{1}}, audit.Checkpoint{Size: 3, Root: tlog.Hash{2}}); err == nil {
		t.Error("two trees of one size with different roots: accepted as consistent")
	}

	// A log whose consistency proofs do not check.
	e = newEnvWith(t, func(l httpapi.LogAPI) httpapi.LogAPI { return badProver{l.(*httpapi.AuditLog)} })
	for i := range 5 {
		e.submit("agent-7", fmt.Sprintf(`{"type":"transfer","amount":%d,"to":"acct-1"}`, i+1), "pay", "")
	}
	e.checkpoint()
	c = e.client("audrey@example.com")
	e.get(c, "/console/log")
	seen := e.log.Size()
	e.submit("agent-7", `{"type":"transfer","amount":6,"to":"acct-1"}`, "pay", "")
	e.checkpoint()
	_, _, body = e.get(c, "/console/log/0")
	for _, want := range []string{`<section class="panel proof failed" id="consistency">`, `<span class="verdict">failed</span>`,
		fmt.Sprintf("the tree of %d entries is not a prefix of the tree of %d", seen, e.log.Size()), `<dd id="status-consistency"><span class="bad">failed</span>`} {
		if !strings.Contains(body, want) {
			t.Errorf("a bad proof: want %q in\n%s", want, body)
		}
	}
	if got := e.srv.seen.cp.Size; got != seen {
		t.Errorf("after a failed check the newest seen has %d entries, want %d (unchanged)", got, seen)
	}
}
