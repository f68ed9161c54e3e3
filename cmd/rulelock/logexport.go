package main

import (
	"context"
	"fmt"
	"os"

	"github.com/rulelock/rulelock/internal/pglog"
)

// runLogExport implements `rulelock log export --store DSN --out DIR`: the
// log that replicas wrote to PostgreSQL, as a C2SP tlog-tiles directory
// that `rulelock verify` checks.
func runLogExport(ctx context.Context, e *env, args []string) error {
	fs := logFlags(e, "export")
	store := fs.String("store", "", "the PostgreSQL `DSN` of the log (postgres://...)")
	out := fs.String("out", "", "the `directory` to write the tiles to (created; must be empty or missing)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *store == "" || *out == "" {
		return usageError("want --store DSN --out DIR")
	}
	if ents, err := os.ReadDir(*out); err == nil && len(ents) > 0 {
		return usageError("--out %s is not empty", *out)
	}
	pool, err := pglog.Connect(ctx, *store)
	if err != nil {
		return err
	}
	defer pool.Close()
	n, err := pglog.NewReader(pool).Export(ctx, *out)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "exported %d entries to %s\n", n, *out)
	return nil
}
