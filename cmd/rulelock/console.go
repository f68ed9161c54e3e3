package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/console"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/internal/passkey"
)

// consoleConfig is the config's console: block. The console is served
// under /console/ when origin is set.
type consoleConfig struct {
	// Origin is the console's external origin, scheme://host[:port], as
	// browsers reach it: the WebAuthn relying party (its host is the RP
	// ID; passkeys are bound to it).
	Origin string `yaml:"origin"`
}

func (c consoleConfig) enabled() bool { return c.Origin != "" }

func (c consoleConfig) validate(approvers int) error {
	if !c.enabled() {
		return nil
	}
	if _, err := passkey.RPID(c.Origin); err != nil {
		return fmt.Errorf("console: %v", err)
	}
	if approvers == 0 {
		return errors.New("console: no approvers are configured: the console signs approvers in")
	}
	return nil
}

// consoleDir is where the console keeps its enrolment links.
func consoleDir(dataDir string) string { return filepath.Join(dataDir, "console") }

// consoleHandler builds the console for a started gateway. Who is an
// approver or an auditor, and which bearer tokens sign in, follow reloads
// (g.who, g.tokens).
func consoleHandler(g *running, reg *approval.Registry, logAPI httpapi.LogAPI, logKey note.Verifier) (http.Handler, error) {
	cfg, gw := g.cfg, g.gw
	return console.New(console.Config{
		Gateway: gw, Log: logAPI, LogKey: logKey, DataDir: consoleDir(cfg.DataDir), Origin: cfg.Console.Origin, Approvers: reg, Registry: gw.Approvers,
		People: func(id string) (console.Person, bool) {
			who := g.who.Load()
			for _, a := range who.Approvers {
				if a.ID == id {
					return console.Person{ID: a.ID, Approver: true, Groups: slices.Clone(a.Groups)}, true
				}
			}
			for _, a := range who.Auditors {
				if a.ID == id {
					return console.Person{ID: a.ID, Auditor: true}, true
				}
			}
			return console.Person{}, false
		},
		Refused: func(ctx context.Context, caller, code, detail string) error {
			return gw.Note(ctx, caller, "", fmt.Sprintf("%s %s: %s", console.NoteRefused, code, detail))
		},
		Bearer: g.tokens.ID,
	})
}

const consoleUsage = `usage: rulelock console enrol [--config FILE | --data DIR --origin URL] [--ttl 24h] ID

Creates a one-time link with which an approver or an auditor enrols a
passkey in the web console, and prints it. The link is valid once, until --ttl passes; only its
token's SHA-256 is stored (in DIR/console/links). It works while the gateway
runs. The approver or auditor must be in the gateway's config, which must enable
the console (console: origin:).

`

func consoleCommands() []command {
	return []command{{"console", "web console administration: console enrol ID prints a one-time passkey enrolment link", runConsole}}
}

// runConsole implements `rulelock console`.
func runConsole(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] != "enrol" {
		fmt.Fprint(e.stderr, consoleUsage)
		return usageError("want: rulelock console enrol ID")
	}
	fs := flag.NewFlagSet("console enrol", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), consoleUsage)
		fs.PrintDefaults()
	}
	configPath := fs.String("config", "", "the gateway's config `file` (its data_dir, console origin and approvers)")
	data := fs.String("data", "", "the gateway's data `directory` (without --config)")
	origin := fs.String("origin", "", "the console's origin `URL` (without --config)")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the link stays valid")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2}
	}
	if fs.NArg() != 1 {
		return usageError("want exactly one ID (an approver or an auditor)")
	}
	id := fs.Arg(0)
	if !approval.ValidID(id) {
		return usageError("invalid id %q", id)
	}
	if *ttl <= 0 || *ttl > 7*24*time.Hour {
		return usageError("--ttl %v: want more than 0 and at most 168h", *ttl)
	}
	if *configPath != "" {
		if *data != "" || *origin != "" {
			return usageError("give --config, or --data and --origin, not both")
		}
		c, err := readConfig(*configPath)
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		if !c.Console.enabled() {
			return &exitError{code: 2, err: fmt.Errorf("%s: the console is not enabled (console: origin:)", *configPath)}
		}
		if !slices.ContainsFunc(c.Approvers, func(a approverConfig) bool { return a.ID == id }) &&
			!slices.ContainsFunc(c.Auditors, func(a auditorConfig) bool { return a.ID == id }) {
			return &exitError{code: 2, err: fmt.Errorf("%s: no approver or auditor %q", *configPath, id)}
		}
		*data, *origin = c.DataDir, c.Console.Origin
	}
	if *data == "" || *origin == "" {
		return usageError("give --config, or --data and --origin")
	}
	if _, err := passkey.RPID(*origin); err != nil {
		return usageError("--origin: %v", err)
	}
	tok, err := passkey.Store{Dir: consoleDir(*data)}.CreateLink(id, time.Now(), *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s/console/enrol#%s\n", *origin, tok)
	fmt.Fprintf(e.stderr, "rulelock: a one-time passkey enrolment link for %s, valid until %s: give it to them privately\n", id, time.Now().Add(*ttl).UTC().Format(time.RFC3339))
	return nil
}
