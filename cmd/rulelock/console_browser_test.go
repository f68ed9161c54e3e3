package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/testenv"
)

// TestConsoleBrowser drives the console in headless Chromium with the
// DevTools WebAuthn virtual authenticator (CTAP2, internal, resident keys,
// user verification): two treasury approvers enrol through their one-time
// links, alice signs out and in again with her passkey, the parked
// $750,000 trade is approved with both passkeys through passkey.js, the
// real upstream is called exactly once, and `rulelock verify --replay`
// checks both WebAuthn approvals; a copy of the log with one byte of an
// assertion changed fails verification.
//
// The request page is the other console half's: until it is merged, the
// test adds the contract's form.vote markup to the signed-in login page
// (which has the session's csrf-token meta and loads passkey.js), through
// DevTools, and submits it as a person would.
//
// RULELOCK_SCREENSHOTS=dir writes PNGs of each step there (for docs/console/).
func TestConsoleBrowser(t *testing.T) {
	chromium := testenv.LookPath(t, "chromium", "apt-get install chromium (scripts/setup.sh does)")
	cg := startConsoleGateway(t)
	trade := cg.park(t, "acme")

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1100, 760),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	// The first run starts the browser and the tab, which live as long as
	// its context: bctx, not a step's.
	ctx := bctx
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatalf("WebAuthn.enable: %v", err)
	}
	shots := os.Getenv("RULELOCK_SCREENSHOTS")
	shot := func(name string) {
		t.Helper()
		if shots == "" {
			return
		}
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			page, perr := chromedp.Run(dctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
			t.Fatalf("%s: %v; the page (%v):\n%s", what, err, perr, page)
		}
	}
	login := cg.origin + "/console/login"
	// The request page is the other console half's. Until it is merged its
	// route does not exist (404); once it does, a logged-out GET redirects
	// to the sign-in page, and the test votes on the real page.
	resp, err := http.Get(cg.api + "/console/requests/" + trade)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	requestPage := resp.StatusCode != http.StatusNotFound
	if !requestPage {
		t.Logf("NOTE: no request page yet (GET /console/requests/ID is 404): voting through the contract's form.vote markup added to the sign-in page")
	}
	approvals := func() []string {
		for _, p := range cg.g.gw.Pending() {
			if p.Request.ID == trade {
				var who []string
				for _, a := range p.Request.Approvals {
					who = append(who, a.Approver)
				}
				return who
			}
		}
		return nil
	}

	for _, who := range []string{"alice", "bob"} {
		auth, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
			Protocol: webauthn.AuthenticatorProtocolCtap2, Transport: webauthn.AuthenticatorTransportInternal,
			HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true,
		}})
		if err != nil {
			t.Fatalf("add a virtual authenticator: %v", err)
		}
		do(who+" opens the enrolment link", chromedp.Navigate(cg.enrolLink(t, who)), chromedp.WaitVisible(chromedp.ID("passkey-enrol")))
		shot("enrol-" + who)
		do(who+" enrols a passkey", chromedp.Click(chromedp.ID("passkey-enrol")), chromedp.WaitVisible(chromedp.ID("passkey-fingerprint")))
		shot("enrolled-" + who)
		if loc, _ := chromedp.Run(ctx, chromedp.Location()); strings.Contains(loc, "#") {
			t.Errorf("the spent token stays in the address bar: %s", loc)
		}
		if who == "alice" {
			// Sign out, and in again with the passkey.
			do("alice opens the sign-in page", chromedp.Navigate(login))
			do("alice is signed in", chromedp.WaitVisible(chromedp.ID("logout")))
			do("alice signs out", chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("passkey-login")))
			shot("login")
			do("alice signs in with her passkey", chromedp.Click(chromedp.ID("passkey-login")))
			waitFor(t, "the sign-in to land on /console/", func() bool {
				loc, err := chromedp.Run(ctx, chromedp.Location())
				return err == nil && loc == cg.origin+"/console/"
			})
		}
		do(who+" is signed in", chromedp.Navigate(login), chromedp.WaitVisible(chromedp.ID("signed-in")))
		approveButton := chromedp.CSS(`form.vote[data-verdict="approve"] button`)
		if requestPage {
			do(who+" opens the request page", chromedp.Navigate(cg.origin+"/console/requests/"+trade), chromedp.WaitVisible(approveButton))
			text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
			if err != nil || !strings.Contains(text, "750000") && !strings.Contains(text, "750,000") {
				t.Fatalf("the request page does not show the $750,000 trade (%v):\n%s", err, text)
			}
		} else {
			// The request page's vote form (the markup contract), on this page.
			inject := fmt.Sprintf(`(() => { const f = document.createElement("form"); f.className = "vote";
				f.dataset.request = %q; f.dataset.verdict = "approve";
				f.innerHTML = '<button type="submit" id="approve">Approve with passkey</button>';
				document.querySelector("main").appendChild(f); return true })()`, trade)
			do(who+" sees the vote form", void(chromedp.Evaluate[bool](inject)), chromedp.WaitVisible(approveButton))
		}
		shot("approve-" + who)
		// A mark on this page, gone once passkey.js has reloaded it.
		do(who+" approves with the passkey", void(chromedp.Evaluate[bool](`window.rulelockTestMark = true`)), chromedp.Click(approveButton))
		// passkey.js: begin, navigator.credentials.get, finish, reload.
		waitFor(t, who+"'s approval", func() bool {
			return who == "alice" && slices.Contains(approvals(), "alice") || who == "bob" && cg.trades.Load() > 0
		})
		waitFor(t, who+"'s page to reload after the vote", func() bool {
			done, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.rulelockTestMark === undefined && document.readyState === "complete"`))
			return err == nil && done
		})
		if !requestPage {
			do(who+"'s page reloads", chromedp.WaitVisible(chromedp.ID("logout")), chromedp.WaitNotPresent(chromedp.ID("approve")))
		}
		shot("approved-" + who)
		do(who+" signs out", chromedp.Navigate(login), chromedp.WaitVisible(chromedp.ID("logout")), chromedp.Click(chromedp.ID("logout")),
			chromedp.WaitVisible(chromedp.ID("passkey-login")))
		if _, err := chromedp.Call(ctx, webauthn.RemoveVirtualAuthenticator, webauthn.RemoveVirtualAuthenticatorParams(auth)); err != nil {
			t.Fatal(err)
		}
	}
	if n := cg.trades.Load(); n != 1 {
		t.Fatalf("the upstream was called %d times, want exactly 1", n)
	}
	if err := cg.stop(); err != nil {
		t.Fatal(err)
	}

	logDir := filepath.Join(cg.data, "log")
	verify := func(dir string) (string, int) {
		out, code, stderr := rl(t, "verify", dir, "--key", filepath.Join(cg.data, "log.pub"), "--replay", "--allow-development", "--config", cg.config)
		return out + stderr, code
	}
	if out, code := verify(logDir); code != 0 || !strings.Contains(out, "2 passkeys enrolled, 2 passkey (WebAuthn) approvals verified") {
		t.Fatalf("verify --replay: exit %d\n%s", code, out)
	}

	if path := os.Getenv("RULELOCK_PASSKEY_VECTOR"); path != "" {
		writePasskeyVector(t, logDir, "alice", path)
	}

	// One byte of bob's assertion, changed in a copy of the log.
	copyDir := filepath.Join(t.TempDir(), "log")
	if err := os.CopyFS(copyDir, os.DirFS(logDir)); err != nil {
		t.Fatal(err)
	}
	tamperAssertion(t, copyDir, "bob")
	out, code := verify(copyDir)
	if code == 0 {
		t.Fatalf("verify passed a log whose passkey assertion was changed:\n%s", out)
	}
	t.Logf("verify of the tampered copy: exit %d\n%s", code, out)
}

// tamperAssertion changes one character of the base64 signature line of
// approver's passkey approval where it is stored in the log's files.
func tamperAssertion(t *testing.T, dir, approver string) {
	t.Helper()
	l, err := audit.OpenSnapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	var sig []byte
	for i := int64(0); i < l.Size(); i++ {
		raw, _ := l.ReadEntry(i)
		e, _ := audit.DecodeEntry(raw)
		if e.Kind == audit.KindApproval && e.Approver == approver && bytes.Contains(e.Signature, []byte("\nwebauthn ")) {
			sig = e.Signature
		}
	}
	l.Close()
	if sig == nil {
		t.Fatalf("no passkey approval by %s in the log", approver)
	}
	// The signature line is the last one: change a character near its end.
	at := len(sig) - 10
	tampered := bytes.Clone(sig)
	tampered[at] = map[bool]byte{true: 'A', false: 'B'}[tampered[at] != 'A']
	old, repl := []byte(base64.StdEncoding.EncodeToString(sig)), []byte(base64.StdEncoding.EncodeToString(tampered))
	found := false
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		for _, pat := range [][2][]byte{{sig, tampered}, {old, repl}} {
			if i := bytes.Index(b, pat[0]); i >= 0 {
				copy(b[i:], pat[1])
				found = true
				return os.WriteFile(p, b, 0o600)
			}
		}
		return nil
	})
	if !found {
		t.Fatalf("the assertion's bytes are not in the log's files")
	}
}

// waitFor polls cond until it holds, failing t after a generous minute
// (a bound against hanging, not a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
	}
}

// void drops an action's result.
func void[T any](a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := a(ctx, t)
		return chromedp.Void{}, err
	}
}

// writePasskeyVector writes approver's enrolment note and passkey
// approval, as the log holds them, to path: the published vector
// internal/approval/testdata/chromium-passkey.txtar
// (RULELOCK_PASSKEY_VECTOR=$PWD/internal/approval/testdata/chromium-passkey.txtar).
func writePasskeyVector(t *testing.T, logDir, approver, path string) {
	t.Helper()
	l, err := audit.OpenSnapshot(logDir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var enrolment string
	var signed []byte
	for i := int64(0); i < l.Size(); i++ {
		raw, _ := l.ReadEntry(i)
		e, _ := audit.DecodeEntry(raw)
		switch {
		case e.Kind == audit.KindNote && strings.HasPrefix(e.Message, "passkey_enrolled "+approver+" "):
			enrolment = e.Message
		case e.Kind == audit.KindApproval && e.Approver == approver:
			signed = e.Signature
		}
	}
	text := "A passkey approval made in headless Chromium by the DevTools virtual authenticator (CTAP2, ES256)\n" +
		"in TestConsoleBrowser, with the enrolment note that carries its public key: it verifies offline.\n" +
		"-- enrolment --\n" + enrolment + "\n-- approval --\n" + string(signed)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
