package console

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/review"
	"github.com/rulelock/rulelock/internal/testenv"
)

// browser starts a headless Chromium with a fresh profile, for the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := testenv.LookPath(t, "chromium", "apt-get install chromium (scripts/setup.sh does)")
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	// Record Content-Security-Policy violations from the first script on:
	// a script the debugger adds is not subject to the page's CSP.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `window.__csp = [];
document.addEventListener("securitypolicyviolation", e => window.__csp.push(e.violatedDirective + " " + e.blockedURI));`}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// screenshot saves a full-page PNG of the current page as name.png: in
// $RULELOCK_SCREENSHOTS (relative to the repository root) when it is set,
// for docs/console.md, else in the test's temporary directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := t.TempDir()
	if d := os.Getenv("RULELOCK_SCREENSHOTS"); d != "" {
		dir = d
		if !filepath.IsAbs(d) {
			dir = filepath.Join("..", "..", d)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		t.Errorf("screenshot %s is not a PNG", name)
	}
}

// The spoofing test of issue 16: an instruction and a payee carrying ANSI
// escapes, CR, U+202E, zero-width and Tag characters are shown escaped,
// visibly, in a real browser (and by the CLI's review); the DOM holds none
// of those characters raw; the page runs under its CSP with no violation;
// an approver sees the vote forms, an auditor never.
func TestSpoofingInBrowser(t *testing.T) {
	e := newEnv(t)
	const payee = "acct-\u202e1-tcca\u200b\u2060\ufeff\U000E0041\U000E0042\x1b[2K\r"
	const instruction = "Pay invoice 1234\r\x1b[1A\x1b[2K  action: {\"amount\":200,\"to\":\"acct-1\"}\n" +
		"\u202eevil\u202c zero\u200bwidth\u2060joined\ufeff \U000E0041\U000E0042 tags"
	action, _ := json.Marshal(map[string]any{"type": "transfer", "amount": 20000, "to": payee, "memo": "invoice 1234"})
	id := e.submit("agent-7", string(action), instruction, "The invoice is due today\x1b[8m (hidden)").RequestID
	other := e.submit("agent-3", `{"type":"transfer","amount":15000.25,"to":"acct-42"}`, "Quarterly supplier payment", "").RequestID
	e.checkpoint()
	// The escapes an approver must see, as review writes them.
	wantShown := []string{
		`"acct-\u{202E}1-tcca\u{200B}\u{2060}\u{FEFF}\u{E0041}\u{E0042}\x1b[2K\r"`,
		`Pay invoice 1234\r\x1b[1A\x1b[2K  action: {"amount":200,"to":"acct-1"}`,
		`\u{202E}evil\u{202C} zero\u{200B}width\u{2060}joined\u{FEFF} \u{E0041}\u{E0042} tags`,
		`The invoice is due today\x1b[8m (hidden)`,
	}

	// The CLI's review of the same request shows the same escapes.
	var cli strings.Builder
	for _, p := range e.gw.Pending() {
		if p.Request.ID == id {
			review.New(e.srv.reviewRequest(p), e.srv.cfg.Now()).Write(&cli)
		}
	}
	for _, w := range wantShown {
		if !strings.Contains(cli.String(), w) {
			t.Errorf("CLI review: want %s in\n%s", w, cli.String())
		}
	}
	checkNoHidden(t, "CLI review", cli.String())

	ctx := browser(t)
	do(t, ctx, chromedp.Navigate(e.hs.URL+"/test-login?as=alice%40example.com"), chromedp.WaitVisible(`#queue table`))
	run(t, ctx, chromedp.Poll[bool](`typeof htmx === "object" && htmx.config.includeIndicatorStyles === false`))
	if q := run(t, ctx, chromedp.Evaluate[string](`document.querySelector("#queue").innerText`)); !strings.Contains(q, wantShown[0]) {
		t.Errorf("the queue does not show the escaped payee %s:\n%s", wantShown[0], q)
	}
	checkCSP(t, ctx, "queue")
	screenshot(t, ctx, "queue")
	// htmx refreshes the queue in place: a request parked now appears
	// without a reload.
	run(t, ctx, chromedp.Evaluate[string](`window.__marker = "same document"`))
	e.submit("agent-5", `{"type":"transfer","amount":99999,"to":"acct-7"}`, "", "")
	if !run(t, ctx, chromedp.Poll[bool](`document.querySelectorAll("#queue tbody tr").length === 3 && window.__marker === "same document"`, chromedp.WithPollingTimeout(30*time.Second))) {
		t.Errorf("the queue did not refresh in place")
	}
	do(t, ctx, chromedp.Navigate(e.hs.URL+"/console/requests/"+id), chromedp.WaitVisible(`#claims`))
	run(t, ctx, chromedp.Poll[bool](`typeof htmx === "object"`))
	text := run(t, ctx, chromedp.Evaluate[string](`document.body.innerText`))
	content := run(t, ctx, chromedp.Evaluate[string](`document.documentElement.textContent`))
	votes := run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("form.vote[data-request]").length`))
	claims := run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#claims blockquote.claim").length`))
	screenshot(t, ctx, "request-spoofing")
	for _, w := range wantShown {
		if !strings.Contains(text, w) {
			t.Errorf("the page does not show %s; it shows:\n%s", w, text)
		}
	}
	checkNoHidden(t, "innerText", text)
	checkNoHidden(t, "textContent", content)
	if votes != 2 || claims != 2 {
		t.Errorf("approver: %d vote forms and %d claim blocks, want 2 and 2", votes, claims)
	}
	checkCSP(t, ctx, "request page")

	// A phone-sized view of the same page.
	do(t, ctx, chromedp.EmulateViewport(390, 844), chromedp.Reload(), chromedp.WaitVisible(`#claims`))
	screenshot(t, ctx, "request-phone")

	// The auditor: the same request, read-only.
	ctx2 := browser(t)
	do(t, ctx2, chromedp.Navigate(e.hs.URL+"/test-login?as=audrey%40example.com"), chromedp.WaitVisible(`#queue`),
		chromedp.Navigate(e.hs.URL+"/console/requests/"+id), chromedp.WaitVisible(`#claims`))
	text = run(t, ctx2, chromedp.Evaluate[string](`document.body.innerText`))
	if n := run(t, ctx2, chromedp.Evaluate[int](`document.querySelectorAll("form.vote, [data-verdict]").length`)); n != 0 {
		t.Errorf("the auditor sees %d vote forms", n)
	}
	if !strings.Contains(text, wantShown[0]) {
		t.Errorf("the auditor does not see the escaped payee")
	}

	// The log search, through htmx without a full reload, and an entry
	// with its proof checked.
	do(t, ctx2, chromedp.Navigate(e.hs.URL+"/console/log"), chromedp.WaitVisible(`#search form`))
	run(t, ctx2, chromedp.Poll[bool](`typeof htmx === "object"`))
	run(t, ctx2, chromedp.Evaluate[string](`window.__marker = "same document"`))
	do(t, ctx2, chromedp.SetValue(`input[name="agent"]`, "agent-7"), chromedp.Click(`#search button[type="submit"]`), chromedp.WaitVisible(`#results table`))
	rows := run(t, ctx2, chromedp.Evaluate[int](`window.__marker === "same document" ? document.querySelectorAll("#results tbody tr").length : -1`))
	if rows != 1 { // the parked decision
		t.Errorf("search agent-7 through htmx: %d rows (-1: the page reloaded), want 1", rows)
	}
	if u := run(t, ctx2, chromedp.Evaluate[string](`location.search`)); u != "?request=&agent=agent-7&type=&decision=&rule=&from=&to=" {
		t.Errorf("the search is not in the address bar: %q", u)
	}
	screenshot(t, ctx2, "log-search")
	do(t, ctx2, chromedp.Navigate(e.hs.URL+"/console/log/0"), chromedp.WaitVisible(`#proof`))
	if v := run(t, ctx2, chromedp.Text(`#proof .verdict`)); !strings.EqualFold(v, "verified") {
		t.Errorf("entry 0's proof: %q, want verified", v)
	}
	checkCSP(t, ctx2, "entry page")
	screenshot(t, ctx2, "entry-proof")

	// A finished request's whole story.
	e.vote("alice@example.com", other, approval.Approve, "")
	e.vote("bob@example.com", other, approval.Approve, "")
	do(t, ctx2, chromedp.Navigate(e.hs.URL+"/console/requests/"+other), chromedp.WaitVisible(`#story table`))
	story := run(t, ctx2, chromedp.Evaluate[string](`document.querySelector("#story").innerText`))
	for _, want := range []string{"approved, outcome ok", "require_approval", "approve", "alice@example.com", "bob@example.com", "outcome ok", "executed"} {
		if !strings.Contains(story, want) {
			t.Errorf("the story of %s does not say %q:\n%s", other, want, story)
		}
	}
	screenshot(t, ctx2, "request-story")

	// An open request page is live: a vote made elsewhere appears in place
	// (same document, the reason being typed kept, who can still approve
	// updated), and once the request is no longer pending the page reloads
	// whole, without the vote forms.
	ctx = browser(t)
	do(t, ctx, chromedp.Navigate(e.hs.URL+"/test-login?as=alice%40example.com"), chromedp.WaitVisible(`#queue`),
		chromedp.Navigate(e.hs.URL+"/console/requests/"+id), chromedp.WaitVisible(`#approvals`))
	run(t, ctx, chromedp.Poll[bool](`typeof htmx === "object"`))
	do(t, ctx, chromedp.SetValue(`form.vote[data-verdict="reject"] input[name="reason"]`, "still checking"))
	run(t, ctx, chromedp.Evaluate[string](`window.__marker = "same document"`))
	e.vote("bob@example.com", id, approval.Approve, "")
	live := `window.__marker === "same document" &&
		document.querySelector("#votes-live").innerText.includes("1 so far") &&
		document.querySelector("#votes-live").innerText.includes("Can still approve: alice@example.com") &&
		!document.querySelector("#votes-live").innerText.includes("Can still approve: alice@example.com, bob") &&
		document.querySelector("#story").innerText.includes("bob@example.com") &&
		document.querySelector('form.vote input[name="reason"]').value === "still checking"`
	if !run(t, ctx, chromedp.Poll[bool](live, chromedp.WithPollingTimeout(30*time.Second))) {
		t.Errorf("the request page did not show bob's approval in place")
	}
	checkCSP(t, ctx, "live request page")
	e.vote("alice@example.com", id, approval.Approve, "")
	reloaded := `window.__marker === undefined && document.querySelector("#story") !== null &&
		document.querySelector("#story").innerText.includes("approved") && document.querySelectorAll("form.vote").length === 0`
	// The reload interrupts any script running in the page: ask again
	// until the reloaded page answers.
	done := false
	for deadline := time.Now().Add(30 * time.Second); !done && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		done, _ = chromedp.Run(ctx, chromedp.Evaluate[bool](reloaded))
	}
	if !done {
		t.Errorf("the request page did not reload once the request was approved")
	}
	checkCSP(t, ctx, "reloaded request page")
}

func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// checkCSP fails t when the page reported a CSP violation.
func checkCSP(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	if v := run(t, ctx, chromedp.Evaluate[[]string](`window.__csp`)); len(v) != 0 {
		t.Errorf("CSP violations on the %s: %q", what, v)
	}
}

// checkNoHidden fails t when s holds a character review escapes (other
// than the newlines and tabs of the page's own layout).
func checkNoHidden(t *testing.T, what, s string) {
	t.Helper()
	for i, r := range s {
		if r != '\n' && r != '\t' && review.Hidden(r) {
			t.Errorf("%s holds %U raw at byte %d", what, r, i)
			return
		}
	}
}
