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
//	INSERT INTO rulelock_entries SELECT next-n+ord-1, leaf, payload FROM unnest(...);
//	COMMIT;  -- synchronous_commit = on: durable before Append returns
//
// sent as one pipelined round trip.
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
// # One outcome per request
//
// An outcome entry claims its request id in rulelock_outcomes (primary
// key) in the transaction that appends it; an entry whose claim finds the
// row is not appended, and Append returns ErrOutcomeRecorded. A Reconciler,
// run by the replica that integrates, records unknown for each allowed
// decision still without an outcome once its lease has expired: the
// replica that decided it died. Through the claim, exactly one outcome is
// written per request, however many replicas notice.
//
// # Reading
//
// API is the log as the gateway's HTTP API serves it (httpapi.LogAPI);
// Live and Snapshot read it back (gateway.LogReader). Tile, EntryBundle
// and Checkpoint read the C2SP tlog-tiles layout
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
// not). Log.Err says so, from a failed append or from the probe that pings
// every second, until PostgreSQL answers again, and the gateway refuses
// every action meanwhile. The connection pool reconnects by itself when
// PostgreSQL returns: no restart.
package pglog
