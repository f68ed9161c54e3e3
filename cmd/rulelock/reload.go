package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/ledger"
)

// A reload replaces who may act — agents, approvers, their tokens and
// groups, auditors, principals — from the config file, without a restart:
// on SIGHUP, or when `rulelock reload` asks through the admin socket.
//
// The admin socket is a Unix socket, <data>/admin.sock, mode 0600 in the
// data directory (0700): only the gateway's own user (and root) can open
// it. That is the same trust as the config file the reload reads, which
// only that user may write: a reload changes nothing the file does not
// say, so whoever may reach the socket could as well send SIGHUP. An
// approver-signed reload would let the approvers a reload is about to
// remove gate their own removal; a network route would need a credential
// the config itself hands out. The socket answers only POST /reload.

// NoteReload opens the message of the note entry each accepted reload
// appends: "reload sha256:<config digest>: <what changed>".
const NoteReload = ledger.NoteReload

func reloadCommands() []command {
	return []command{{"reload", "reload who may act (agents, approvers, auditors, tokens) from the config of a running gateway", runReload}}
}

// adminSocket is the admin socket's path in a data directory.
func adminSocket(dataDir string) string { return filepath.Join(dataDir, "admin.sock") }

// serveAdmin listens on the admin socket until the gateway stops.
func (g *running) serveAdmin(ctx context.Context) error {
	path := adminSocket(g.cfg.DataDir)
	if len(path) > 100 {
		return fmt.Errorf("%s: the path is too long for a Unix socket", path)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("%s: another gateway answers on it", path)
	}
	os.Remove(path) // a stale socket of a gateway that stopped
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		summary, err := g.reloadWho(r.Context())
		if err != nil {
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, err.Error()+"\n")
			return
		}
		io.WriteString(w, summary+"\n")
	})
	g.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go g.admin.Serve(ln)
	return nil
}

// reloadWho reloads who may act from the config file, atomically: the new
// tokens, approvers and principals are built and checked first, the reload
// entry is durably logged, and only then are they put in force. A bad
// config, or a log that does not take the entry, keeps the current ones
// and says why (stderr, and a note in the log when the log takes it).
func (g *running) reloadWho(ctx context.Context) (string, error) {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	summary, err := g.reloadWhoLocked(ctx)
	if err != nil {
		fmt.Fprintf(g.e.stderr, "rulelock: reload refused, who may act is unchanged: %v\n", err)
		g.recorder().Append(context.WithoutCancel(ctx), &audit.Entry{Kind: audit.KindNote, Time: time.Now().UTC(), EngineVersion: gateway.EngineVersion,
			Message: fmt.Sprintf("%s_refused: %v", NoteReload, err)})
		return "", err
	}
	fmt.Fprintf(g.e.stderr, "rulelock: reloaded who may act: %s\n", summary)
	return summary, nil
}

func (g *running) reloadWhoLocked(ctx context.Context) (string, error) {
	if g.cfgPath == "" {
		return "", errors.New("the gateway was started without --config: there is no file to reload")
	}
	b, err := os.ReadFile(g.cfgPath)
	if err != nil {
		return "", err
	}
	file, err := parseConfig(g.cfgPath, b)
	if err != nil {
		return "", err
	}
	old := g.who.Load()
	next := *old
	next.Agents, next.Approvers, next.Auditors = file.Agents, file.Approvers, file.Auditors
	if len(next.Approvers) == 0 && next.Bundle == "" && len(next.Agents) == 0 {
		if err := devApprovers(g.e, &next); err != nil { // as at the start
			return "", err
		}
	}
	if err := next.validate(); err != nil {
		return "", err
	}
	reg, err := next.registry()
	if err != nil {
		return "", err
	}
	if (reg == nil) != (g.gw.Approvers() == nil) {
		return "", gateway.ErrReloadApprovers
	}
	tokens := next.tokens()
	if len(next.Agents) == 0 && next.Bundle == "" {
		t, err := devAgent(g.e, next.DataDir)
		if err != nil {
			return "", err
		}
		tokens = append(tokens, t)
	}
	sum := sha256.Sum256(b)
	changes := whoChanged(old, &next)
	if restart := otherChanges(g.cfg, file); restart != "" {
		changes += "; " + restart
	}
	msg := fmt.Sprintf("%s sha256:%s: %s", NoteReload, hex.EncodeToString(sum[:]), changes)
	if _, err := g.recorder().Append(context.WithoutCancel(ctx), &audit.Entry{Kind: audit.KindNote, Time: time.Now().UTC(),
		EngineVersion: gateway.EngineVersion, Message: msg}); err != nil {
		return "", fmt.Errorf("record the reload: %w", err)
	}
	// In force from here. The tokens first: a removed agent is refused
	// from now on.
	g.tokens.Set(tokens)
	if err := g.gw.SetApprovers(reg); err != nil {
		return "", err // checked above: not reached
	}
	g.gw.SetPrincipals(next.principals())
	g.who.Store(&next)
	// Then the parked requests that can no longer run are denied at once,
	// each logged with this reload's digest. Should the log refuse one,
	// the reload stays in force and the rest stay parked: their quorum
	// re-checks them (gateway.Config.Principals).
	summary := strings.TrimPrefix(msg, NoteReload+" ")
	revoked, err := g.gw.RecheckParked(context.WithoutCancel(ctx), "sha256:"+hex.EncodeToString(sum[:]))
	summary += "; parked requests denied [" + revokedList(revoked) + "]"
	if err != nil {
		fmt.Fprintf(g.e.stderr, "rulelock: reload in force, but parked requests not re-checked: %v\n", err)
		summary += fmt.Sprintf(" (re-check stopped: %v: the others are re-checked at their quorum)", err)
	}
	return summary, nil
}

// revokedList is "id (reason) id (reason)…" of the requests a reload denied.
func revokedList(rs []gateway.Revoked) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%s (%s: %s)", r.RequestID, r.Agent, r.Reason)
	}
	return strings.Join(parts, " ")
}

// recheckAtStart re-checks the parked requests a restart restored against
// who may act as the config file read at the start says, as a reload
// does: an agent removed, or approvers changed, while the gateway was down
// is a reload too. When requests are parked, a note "reload
// sha256:<digest>: at start" is logged first, so that each denial names a
// reload note as after SIGHUP (ledger.DecisionState.Reload). Should the
// log refuse, the requests stay parked and their quorum re-checks them.
func (g *running) recheckAtStart(ctx context.Context) {
	if len(g.gw.Pending()) == 0 {
		return
	}
	digest := "sha256:" + hex.EncodeToString(g.cfgSum[:])
	if _, err := g.log.Append(context.WithoutCancel(ctx), &audit.Entry{Kind: audit.KindNote, Time: time.Now().UTC(),
		EngineVersion: gateway.EngineVersion, Message: fmt.Sprintf("%s %s: at start", NoteReload, digest)}); err != nil {
		fmt.Fprintf(g.e.stderr, "rulelock: parked requests not re-checked at start: %v\n", err)
		return
	}
	revoked, err := g.gw.RecheckParked(context.WithoutCancel(ctx), digest)
	if len(revoked) > 0 {
		fmt.Fprintf(g.e.stderr, "rulelock: at start, parked requests denied [%s]\n", revokedList(revoked))
	}
	if err != nil {
		fmt.Fprintf(g.e.stderr, "rulelock: parked requests not all re-checked at start: %v\n", err)
	}
}

// whoChanged says which ids were added, removed or changed (roles,
// principal, groups, keys, tokens, certificates: never their values).
func whoChanged(old, next *serveConfig) string {
	var parts []string
	diff := func(what string, a, b map[string]any) {
		var add, del, chg []string
		for id, v := range b {
			if w, ok := a[id]; !ok {
				add = append(add, id)
			} else if !reflect.DeepEqual(v, w) {
				chg = append(chg, id)
			}
		}
		for id := range a {
			if _, ok := b[id]; !ok {
				del = append(del, id)
			}
		}
		slices.Sort(add)
		slices.Sort(del)
		slices.Sort(chg)
		parts = append(parts, fmt.Sprintf("%s added [%s] removed [%s] changed [%s]", what,
			strings.Join(add, " "), strings.Join(del, " "), strings.Join(chg, " ")))
	}
	diff("agents", byID(old.Agents, func(a agentConfig) string { return a.ID }), byID(next.Agents, func(a agentConfig) string { return a.ID }))
	diff("approvers", byID(old.Approvers, func(a approverConfig) string { return a.ID }), byID(next.Approvers, func(a approverConfig) string { return a.ID }))
	diff("auditors", byID(old.Auditors, func(a auditorConfig) string { return a.ID }), byID(next.Auditors, func(a auditorConfig) string { return a.ID }))
	return strings.Join(parts, "; ")
}

// byID indexes xs by id.
func byID[T any](xs []T, id func(T) string) map[string]any {
	m := make(map[string]any, len(xs))
	for _, x := range xs {
		m[id(x)] = x
	}
	return m
}

// otherChanges says when the file changes more than who may act: those
// changes wait for a restart.
func otherChanges(running, file *serveConfig) string {
	a, b := *running, *file
	a.Agents, a.Approvers, a.Auditors = nil, nil, nil
	b.Agents, b.Approvers, b.Auditors = nil, nil, nil
	// Only what the file sets: flags and defaults fill the running config.
	for _, p := range []struct{ run, f *string }{{&a.Listen, &b.Listen}, {&a.DataDir, &b.DataDir}, {&a.Policy, &b.Policy}, {&a.Bundle, &b.Bundle},
		{&a.Trust, &b.Trust}, {&a.Origin, &b.Origin}} {
		if *p.f == "" {
			*p.run = ""
		}
	}
	if b.CheckpointInterval.Duration == 0 {
		a.CheckpointInterval = b.CheckpointInterval
	}
	if b.Log.MaxUnsigned.Duration == 0 {
		a.Log.MaxUnsigned = b.Log.MaxUnsigned
	}
	if reflect.DeepEqual(a, b) {
		return ""
	}
	return "other settings in the file differ from those in force: they take effect at the next restart"
}

// runReload asks a running gateway to reload who may act, through its
// admin socket in the data directory.
func runReload(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "reload", "[--config FILE | --data DIR]")
	cfgPath := fs.String("config", "", "the gateway's configuration file (for its data_dir)")
	dataDir := fs.String("data", "", "the gateway's data directory (default ./rulelock-data)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dir := *dataDir
	if dir == "" && *cfgPath != "" {
		c, err := readConfig(*cfgPath)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("invalid config: %v", err)}
		}
		dir = c.DataDir
	}
	if dir == "" {
		dir = "rulelock-data"
	}
	path := adminSocket(dir)
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	req, err := http.NewRequestWithContext(ctx, "POST", "http://admin/reload", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("no gateway answers on %s (is it running with this data directory?): %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reload refused, who may act is unchanged: %s", strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(e.stdout, "reloaded: %s", body)
	return nil
}
