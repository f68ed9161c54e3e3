package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/notify"
)

// notificationsConfig is the notifications: section: a webhook per
// approver group, told when a request parks (docs/approvals.md).
type notificationsConfig struct {
	// ConsoleURL is the base of the link to each request:
	// <console_url>/console/requests/<id>.
	ConsoleURL string   `yaml:"console_url"`
	Queue      int      `yaml:"queue"`       // requests queued per group (default 256)
	Attempts   int      `yaml:"attempts"`    // per message (default 8)
	Backoff    duration `yaml:"backoff"`     // first wait between attempts (default 1s)
	MaxBackoff duration `yaml:"max_backoff"` // longest wait (default 1m)
	Timeout    duration `yaml:"timeout"`     // one attempt (default 10s)
	// BatchWait is how long a group waits after a park for more to send
	// in the same message (default 1s; 0s sends at once).
	BatchWait *duration                    `yaml:"batch_wait"`
	Groups    map[string]notifyGroupConfig `yaml:"groups"`
}

type notifyGroupConfig struct {
	// URL is a credential (a Slack webhook URL is its own secret): like
	// a header, a literal value, an environment variable or a file.
	URL     headerSource            `yaml:"url"`
	Format  string                  `yaml:"format"` // json (default) or slack
	Headers map[string]headerSource `yaml:"headers"`
}

// validate checks the section against the approvers' groups: a group no
// approver is in would never be asked, and is a typo.
func (c *notificationsConfig) validate(approvers []approverConfig) error {
	if len(c.Groups) == 0 {
		return nil
	}
	if c.ConsoleURL == "" {
		return fmt.Errorf("notifications: console_url is required: each notification links to the request in the console")
	}
	if c.Queue < 0 || c.Attempts < 0 {
		return fmt.Errorf("notifications: queue and attempts must be positive")
	}
	for name, g := range c.Groups {
		if !slices.ContainsFunc(approvers, func(a approverConfig) bool { return slices.Contains(a.Groups, name) }) {
			return fmt.Errorf("notifications: group %q: no approver is in it", name)
		}
		if g.Format != "" && g.Format != string(notify.FormatJSON) && g.Format != string(notify.FormatSlack) {
			return fmt.Errorf("notifications: group %q: format %q: want json or slack", name, g.Format)
		}
		if err := checkSources(fmt.Sprintf("notifications: group %q", name), map[string]headerSource{"url": g.URL}); err != nil {
			return err
		}
		if err := checkSources(fmt.Sprintf("notifications: group %q header", name), g.Headers); err != nil {
			return err
		}
	}
	return nil
}

// notifier starts the notifier the section describes, nil without groups.
// Errors name the group, never the URL or a header's value.
func (c *notificationsConfig) notifier(getenv func(string) string, log notify.Recorder, logger *slog.Logger) (*notify.Notifier, error) {
	if len(c.Groups) == 0 {
		return nil, nil
	}
	targets := map[string]notify.Target{}
	for name, g := range c.Groups {
		u, err := g.URL.resolve(getenv)
		if err != nil {
			return nil, fmt.Errorf("notifications: group %q url: %v", name, err)
		}
		h := http.Header{}
		for k, src := range g.Headers {
			v, err := src.resolve(getenv)
			if err != nil {
				return nil, fmt.Errorf("notifications: group %q header %q: %v", name, k, err)
			}
			h.Set(k, v)
		}
		f := notify.Format(g.Format)
		if f == "" {
			f = notify.FormatJSON
		}
		targets[name] = notify.Target{URL: u, Format: f, Headers: h}
	}
	linger := time.Second
	if c.BatchWait != nil {
		linger = c.BatchWait.Duration
	}
	return notify.New(notify.Options{Targets: targets, Linger: linger, ConsoleURL: c.ConsoleURL, Queue: c.Queue, Attempts: c.Attempts,
		Backoff: c.Backoff.Duration, MaxBackoff: c.MaxBackoff.Duration, Timeout: c.Timeout.Duration,
		Log: log, Logger: logger, EngineVersion: gateway.EngineVersion})
}

// notifyParked hands the gateway's parked requests to n.
func notifyParked(n *notify.Notifier) gateway.Notifier {
	return gateway.NotifierFunc(func(p gateway.Parked) {
		n.Parked(notify.Request{ID: p.ID, Agent: p.Agent, ActionType: p.ActionType, Requirements: p.Requirements, Expires: p.Expires})
	})
}

var _ notify.Recorder = (*audit.Log)(nil)
