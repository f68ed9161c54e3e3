// Package pgstate shares the gateway's state between replicas on
// PostgreSQL: it is the gateway.Replicas (and the gateway.Recorder and
// gateway.LogReader) of a gateway whose log is a pglog.Log that several
// replicas append to.
//
// The log stays the only source of truth and the ledger the only fold: no
// table holds limits, totals or parked requests. Each replica keeps the
// state in memory, as a single gateway does, and reads the entries the
// other replicas appended (the log's tail, by index) before it acts on
// state another replica may have changed.
//
// # Locks
//
// What must be atomic across replicas is guarded by PostgreSQL
// session-level advisory locks, one per name, held on a connection of a
// pool of its own (so that holders waiting for a lock never starve the
// log's appends of connections):
//
//	freeze            a freeze or an unfreeze vote; held shared ("shared:freeze")
//	                  for every decision, by one hold per replica
//	global            decisions that read or write all agents' state
//	principal:<id>    decisions that read or write a principal's state
//	agent:<id>        decisions of the agent whose action type a rule reads
//	                  or counts (its sessions are its own)
//	request:<id>      votes, expiry, reports and re-checks of a request
//
// A name is the first 8 bytes of its SHA-256 as a bigint key; a name
// "shared:X" takes X in shared mode. Hold.Lock takes the names in order
// and returns the log's size read once they are held, in one statement
// (the function rulelock_lock):
//
//	PERFORM pg_advisory_lock(k) (or pg_advisory_lock_shared(k)) for each key;
//	RETURN (SELECT next FROM rulelock_sequence);  -- a fresh snapshot
//
// A replica releases a lock only once the entry it appended under it is
// committed, so every entry appended under the lock before is below that
// size; the gateway folds the log up to it before it decides. A lock whose
// state is in doubt (a cancelled wait, a failed unlock) is released by
// closing the holder's connection: PostgreSQL releases a session's advisory
// locks when the session ends, also when the replica is killed. A holder's
// session that ends while its replica goes on (a terminated backend, a
// broken connection) releases its locks before the entries appended under
// them on the log's connections are committed; the replica learns it only
// when it next uses or releases the holder.
//
// # Waking waiters
//
// After an APPROVAL entry (a vote, a rejection, an expiry, an execution)
// the replica that appended it sends NOTIFY rulelock_requests with the
// request id. Listen LISTENs on its own connection and calls the gateway's
// Follow, so that GET /v1/requests/{id}?wait= on any replica returns when
// the request is final; a Wait also reads the log every second when no
// notification comes (a notification is lost while a listener
// reconnects).
//
// # Example
//
//	pool, _ := pglog.Connect(ctx, dsn)
//	lg, _ := pglog.Open(ctx, pool, pglog.Options{})
//	st, _ := pgstate.New(ctx, pool, lg, pgstate.Options{})
//	defer st.Close()
//	gw, _ := gateway.New(gateway.Config{Log: st, Replicas: st, ...})
//	snap, _ := pglog.NewReader(pool).Snapshot(ctx)
//	gw.Rebuild(ctx, snap)
//	go st.Listen(ctx, gw.Follow)
package pgstate
