package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/export"
	"github.com/rulelock/rulelock/internal/search"
)

// runLogFind implements `rulelock log find`: it brings the search index
// (DATA/index) up to date with the log, read-only and without its lock
// (it works while a gateway runs), and prints the entries that match.
func runLogFind(ctx context.Context, e *env, args []string) error {
	fs := logFlags(e, "find")
	data := fs.String("data", "rulelock-data", "the gateway's data `directory` (log in DIR/log, index in DIR/index)")
	var q search.Query
	fs.StringVar(&q.RequestID, "request", "", "entries about this request `id`")
	fs.StringVar(&q.Agent, "agent", "", "entries of this `agent`")
	fs.StringVar(&q.Type, "type", "", "entries whose action has this `type`")
	fs.StringVar(&q.Decision, "decision", "", "entries with this `decision` (allow, deny, require_approval, approved; approve, reject, expired, executed on approvals)")
	fs.StringVar(&q.Rule, "rule", "", "entries in which this `rule` matched")
	kind := fs.String("kind", "", "entries of this `kind` (decision, approval, outcome, policy_activation, note, key_rotation)")
	since := fs.String("since", "", "entries at or after this `time` (RFC 3339, or a duration before now: 24h)")
	until := fs.String("until", "", "entries before this `time` (RFC 3339, or a duration before now)")
	fs.Int64Var(&q.From, "from", 0, "entries at or after this `index`")
	fs.IntVar(&q.Limit, "limit", 100, "at most `n` entries (0: all)")
	asJSON := fs.Bool("json", false, "print JSON lines {index, leaf_hash, entry}, as rulelock export sends them")
	noUpdate := fs.Bool("no-update", false, "do not update the index first (what it does not cover is scanned)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError("log find takes no arguments, only flags")
	}
	now := time.Now()
	if q.Since, err = parseWhen(*since, now); err != nil {
		return usageError("--since: %v", err)
	}
	if q.Until, err = parseWhen(*until, now); err != nil {
		return usageError("--until: %v", err)
	}
	q.Kind = audit.Kind(*kind)
	if q.From < 0 || q.Limit < 0 {
		return usageError("--from and --limit must not be negative")
	}
	// The log from where the index stops (every frame after it checked),
	// the entries it covers where it recorded them.
	ix := search.Open(filepath.Join(*data, "index"))
	snap, err := ix.OpenLog(filepath.Join(*data, "log"))
	if err != nil {
		return err
	}
	defer snap.Close()
	if !*noUpdate {
		// The index only makes the search fast: without it (another
		// process updating it, a read-only data directory) the entries it
		// does not cover are scanned, with the same results.
		if _, err := ix.Update(ctx, snap); errors.Is(err, search.ErrBusy) {
			fmt.Fprintf(e.stderr, "rulelock: %v; searching without updating it\n", err)
		} else if err != nil {
			if ctx.Err() != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "rulelock: search index: %v; scanning what it does not cover\n", err)
		}
	}
	rs, err := ix.Find(snap, q)
	if err != nil {
		return err
	}
	if q.Limit > 0 && len(rs) == q.Limit {
		fmt.Fprintf(e.stderr, "rulelock: %d entries shown (--limit); more may match from --from %d\n", len(rs), rs[len(rs)-1].Index+1)
	}
	if *asJSON {
		var b []byte
		for _, r := range rs {
			b = export.AppendLine(b, r.Index, r.LeafHash, r.Raw)
		}
		_, err := e.stdout.Write(b)
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tTIME\tKIND\tDECISION\tAGENT\tREQUEST\tTYPE\tRULES")
	for _, r := range rs {
		typ, _ := search.ActionType(snap, r.Entry)
		var rules []string
		for _, ru := range r.Entry.Rules {
			rules = append(rules, ru.Name)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Index, r.Entry.Time.UTC().Format(time.RFC3339), r.Entry.Kind,
			dash(r.Entry.Decision), dash(r.Entry.Agent), dash(r.Entry.RequestID), dash(typ), dash(strings.Join(rules, ",")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseWhen reads an RFC 3339 time, or a duration before now; "" is none.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration", s)
	}
	return t, nil
}
