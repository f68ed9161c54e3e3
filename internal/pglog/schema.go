package pglog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"
)

// schemaLock is the advisory lock key that serialises schema creation
// ("rulelock" + 0).
const schemaLock = 0x72756c656c6f636b

// integratorLock is the advisory lock key held by the one integrator.
const integratorLock = schemaLock + 1

// schema creates the log's tables if they are missing. Entries, blobs,
// sensitive values and salts are written by appends, and
// rulelock_outcomes, the requests that have an outcome entry (at most one
// each, claimed in the transaction that appends it); tiles and checkpoints
// only by the integrator.
const schema = `
CREATE TABLE IF NOT EXISTS rulelock_sequence (
	id   int PRIMARY KEY CHECK (id = 0),
	next bigint NOT NULL CHECK (next >= 0)
);
INSERT INTO rulelock_sequence VALUES (0, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS rulelock_entries (
	idx     bigint PRIMARY KEY CHECK (idx >= 0),
	leaf    bytea NOT NULL,
	payload bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS rulelock_blobs (
	digest  bytea PRIMARY KEY,
	content bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS rulelock_sensitive (
	idx    bigint NOT NULL,
	field  text NOT NULL,
	hmac   bytea NOT NULL,
	sealed bytea NOT NULL,
	PRIMARY KEY (idx, field)
);
CREATE TABLE IF NOT EXISTS rulelock_salts (
	hmac bytea PRIMARY KEY,
	idx  bigint NOT NULL,
	salt bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS rulelock_tiles (
	level int NOT NULL,
	idx   bigint NOT NULL,
	data  bytea NOT NULL,
	PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS rulelock_checkpoint (
	id   int PRIMARY KEY CHECK (id = 0),
	size bigint NOT NULL,
	root bytea NOT NULL,
	note bytea
);
CREATE TABLE IF NOT EXISTS rulelock_outcomes (
	request_id text PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS rulelock_checkpoints (
	size bigint PRIMARY KEY,
	root bytea NOT NULL,
	note bytea NOT NULL
);
`

// migrate creates the schema, once even when replicas start together.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(schemaLock)); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	if _, err := tx.Exec(ctx, schema); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	empty, _ := tlog.TreeHash(0, nil)
	if _, err := tx.Exec(ctx, "INSERT INTO rulelock_checkpoint VALUES (0, 0, $1, NULL) ON CONFLICT DO NOTHING", empty[:]); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	return nil
}
