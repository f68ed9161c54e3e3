// Package pglog is rulelock's audit log in PostgreSQL: one log that several
// gateway replicas append to, with the same entries, tiles and signed
// checkpoints as the embedded log (package audit), so that the unchanged
// verifier checks it.
//
// # Sequencing
//
// An append takes the next contiguous indexes from a counter row under a row
// lock, in the transaction that inserts the entries:
//
//	BEGIN;
//	UPDATE rulelock_sequence SET next = next + $n WHERE id = 0 RETURNING next;
//	COPY rulelock_entries (idx, leaf, payload) FROM STDIN;  -- next-n .. next-1
//	COMMIT;  -- synchronous_commit = on: durable before Append returns
//
// The row lock orders the transactions of every replica into one total
// order; a transaction that rolls back also rolls back its increment, so
// indexes have no gaps and no duplicates. Each Log has one batcher that
// takes every append waiting and commits them in one transaction (group
// commit, as Tessera's MySQL driver does), so the lock is taken once per
// batch, not once per entry.
//
// # Integration
//
// One integrator at a time, across all replicas, builds the Merkle tree: the
// one whose dedicated connection holds the session advisory lock
// (pg_try_advisory_lock). It reads the entries after the current tree in
// index order, computes the RFC 6962 hashes (golang.org/x/mod/sumdb/tlog),
// stores the C2SP tlog-tiles hash tiles that change, signs a
// C2SP tlog-checkpoint note with the log key and publishes it, all in one
// transaction on that connection, by compare-and-swap:
//
//	UPDATE rulelock_checkpoint SET size = $new, root = $newroot, note = $note
//	WHERE id = 0 AND size = $old AND root = $oldroot;
//
// and a row per checkpoint in rulelock_checkpoints, whose primary key is the
// size. A transaction whose swap finds another tree rolls back with
// ErrConflict, so two integrators never publish diverging trees, and never
// two checkpoints for one size. When the integrator's connection dies,
// PostgreSQL releases the lock and another replica's integrator, which
// tries it every interval, takes over from the published tree; before
// extending a tree it recomputes its root from the stored tiles.
//
// # Reading
//
// Tile, EntryBundle and Checkpoint read the C2SP tlog-tiles layout
// (Handler serves it over HTTP) and Export writes it to a directory that
// `rulelock verify` checks (audit.VerifyTiles).
//
// # Example
//
//	pool, err := pglog.Connect(ctx, "postgres://rulelock@db/rulelock")
//	...
//	l, err := pglog.Open(ctx, pool, pglog.Options{})
//	r, err := l.Append(ctx, &audit.Entry{Kind: audit.KindDecision, ...})
//	// r.Index and r.LeafHash go into the reply, as with audit.Log.
//	in := pglog.NewIntegrator(connConfig, signer, pglog.IntegratorOptions{})
//	go in.Run(ctx) // every replica; one integrates at a time
//	...
//	n, err := pglog.NewReader(pool).Export(ctx, dir)
//	rep, err := audit.VerifyTiles(dir, verifier, audit.VerifyOptions{})
//
// # Failure
//
// PostgreSQL unavailable means no append is acknowledged: Append returns
// only after COMMIT, and an error otherwise (the entry may or may not be in
// the log then, as with audit.Log.Append, and the caller acts as if it were
// not). The connection pool reconnects by itself when PostgreSQL returns.
package pglog
