package pgstate

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/pglog"
)

// Options configure a State. The zero value works.
type Options struct {
	// MaxHolders caps the connections that hold locks at once (default
	// 16): a decision or a vote waits for one beyond that. Each replica
	// opens up to MaxHolders + its log pool's connections + 1 (Listen):
	// mind PostgreSQL's max_connections.
	MaxHolders int32
	// Timeout bounds one wait for locks and one read of the log (default
	// 10s): past it the decision fails closed (ErrUnavailable).
	Timeout time.Duration
}

func (o *Options) setDefaults() {
	if o.MaxHolders <= 0 {
		o.MaxHolders = 16
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
}

// State is one replica's access to the state the replicas share: it
// appends through the log, reads the log back, and holds the replicas'
// locks. It is safe for concurrent use.
type State struct {
	pool  *pgxpool.Pool // reads, notifications
	locks *pgxpool.Pool // lock holders only
	log   gateway.Recorder
	opts  Options
	known atomic.Int64 // the largest log size seen
}

var (
	_ gateway.Replicas  = (*State)(nil)
	_ gateway.Recorder  = (*State)(nil)
	_ gateway.LogReader = (*State)(nil)
	_ ledger.Unsealer   = (*State)(nil)
)

// functionLock is the advisory lock key that serialises the creation of
// rulelock_lock ("rulelock" + 16; pglog uses + 0 and + 1).
const functionLock = 0x72756c656c6f636b + 16

// lockFunction takes advisory locks in order, each exclusive or shared,
// and returns the log's size read after they are all held (a volatile
// function: each statement reads a fresh snapshot).
const lockFunction = `
CREATE OR REPLACE FUNCTION rulelock_lock(keys bigint[], shared boolean[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
		IF shared[i] THEN
			PERFORM pg_advisory_lock_shared(keys[i]);
		ELSE
			PERFORM pg_advisory_lock(keys[i]);
		END IF;
	END LOOP;
	RETURN (SELECT next FROM rulelock_sequence WHERE id = 0);
END $$;
`

// New returns the shared state of the replicas whose log, in the database
// of pool, lg appends to: a *pglog.Log, or whatever wraps one (its Append
// must return only once the entry is committed). It opens a pool of its own
// for the lock holders, with pool's configuration; Close closes it.
func New(ctx context.Context, pool *pgxpool.Pool, lg gateway.Recorder, opts Options) (*State, error) {
	opts.setDefaults()
	if err := migrate(ctx, pool); err != nil {
		return nil, err
	}
	cfg := pool.Config().Copy()
	cfg.MaxConns = opts.MaxHolders
	cfg.MinConns = 0
	locks, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("shared state: %w", err)
	}
	return &State{pool: pool, locks: locks, log: lg, opts: opts}, nil
}

func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("shared state: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(functionLock)); err != nil {
		return fmt.Errorf("shared state: %w", err)
	}
	if _, err := tx.Exec(ctx, lockFunction); err != nil {
		return fmt.Errorf("shared state: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("shared state: %w", err)
	}
	return nil
}

// Close closes the lock holders' pool (every lock still held is released
// with its connection). It closes neither the log nor its pool.
func (s *State) Close() { s.locks.Close() }

// Notification channel of final request events (Listen).
const channel = "rulelock_requests"

// Append appends e to the log (gateway.Recorder), durable on return. After
// an APPROVAL entry it notifies the other replicas (Listen); a notification
// that fails is not an error: they read the log every second anyway.
func (s *State) Append(ctx context.Context, e *audit.Entry) (audit.Receipt, error) {
	r, err := s.log.Append(ctx, e)
	if err != nil {
		return r, err
	}
	if e.Kind == audit.KindApproval {
		nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.Timeout)
		_, _ = s.pool.Exec(nctx, "SELECT pg_notify($1, $2)", channel, e.RequestID)
		cancel()
	}
	s.noteSize(r.Index + 1)
	return r, nil
}

func (s *State) noteSize(n int64) {
	for {
		k := s.known.Load()
		if n <= k || s.known.CompareAndSwap(k, n) {
			return
		}
	}
}

// LogSize returns the number of acknowledged entries in the log now
// (gateway.Replicas).
func (s *State) LogSize(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	var next int64
	if err := s.pool.QueryRow(ctx, "SELECT next FROM rulelock_sequence WHERE id = 0").Scan(&next); err != nil {
		return 0, fmt.Errorf("log size: %w", err)
	}
	s.noteSize(next)
	return next, nil
}

// Size is the log's size (gateway.LogReader): now, or when PostgreSQL does
// not answer, the largest size seen (every entry below it is in the log;
// reading them fails while PostgreSQL is away).
func (s *State) Size() int64 {
	if n, err := s.LogSize(context.Background()); err == nil {
		return n
	}
	return s.known.Load()
}

// ReadEntries returns the encoded entries [lo, hi) (gateway.LogReader).
func (s *State) ReadEntries(lo, hi int64) ([][]byte, error) {
	if lo < 0 || lo > hi {
		return nil, fmt.Errorf("read entries [%d, %d): out of range", lo, hi)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT idx, payload FROM rulelock_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx", lo, hi)
	if err != nil {
		return nil, fmt.Errorf("read entries [%d, %d): %w", lo, hi, err)
	}
	out := make([][]byte, 0, hi-lo)
	var idx int64
	var b []byte
	_, err = pgx.ForEachRow(rows, []any{&idx, &b}, func() error {
		if idx != lo+int64(len(out)) {
			return fmt.Errorf("entry %d: %w: missing", lo+int64(len(out)), pglog.ErrCorrupt)
		}
		out = append(out, b)
		b = nil
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read entries [%d, %d): %w", lo, hi, err)
	}
	if int64(len(out)) != hi-lo {
		return nil, fmt.Errorf("read entry %d: %w: missing", lo+int64(len(out)), pglog.ErrCorrupt)
	}
	return out, nil
}

// Blob returns the content of a field stored by digest (gateway.LogReader).
func (s *State) Blob(d audit.Digest) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	var b []byte
	if err := s.pool.QueryRow(ctx, "SELECT content FROM rulelock_blobs WHERE digest = $1", d[:]).Scan(&b); err != nil {
		return nil, fmt.Errorf("read blob %v: %w", d, err)
	}
	if sha256.Sum256(b) != d {
		return nil, fmt.Errorf("read blob %v: content does not match digest", d)
	}
	return b, nil
}

// Hold returns a lock holder on a connection of its own (gateway.Replicas).
func (s *State) Hold(ctx context.Context) (gateway.Hold, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	c, err := s.locks.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("hold shared locks: %w", err)
	}
	return &holder{s: s, conn: c}, nil
}

// holder is one connection that holds advisory locks.
type holder struct {
	s      *State
	conn   *pgxpool.Conn
	broken bool // a lock may be held that Release must not leave behind
}

// key is the advisory lock key of a lock's name.
func key(name string) int64 {
	h := sha256.Sum256([]byte("rulelock lock " + name))
	return int64(binary.BigEndian.Uint64(h[:8]))
}

// SharedPrefix marks a lock's name as taken in shared mode (gateway's
// "shared:freeze": every decision holds it shared, a freeze exclusive):
// "shared:X" and "X" are one lock.
const SharedPrefix = "shared:"

// keysOf returns the advisory lock keys of names and which are shared.
func keysOf(names []string) ([]int64, []bool) {
	ks := make([]int64, len(names))
	shared := make([]bool, len(names))
	for i, n := range names {
		base, ok := strings.CutPrefix(n, SharedPrefix)
		ks[i], shared[i] = key(base), ok
	}
	return ks, shared
}

// ErrBroken is returned by Lock on a holder whose connection failed.
var ErrBroken = errors.New("lock holder's connection failed")

func (h *holder) Lock(ctx context.Context, names []string) (int64, error) {
	if h.broken {
		return 0, ErrBroken
	}
	ctx, cancel := context.WithTimeout(ctx, h.s.opts.Timeout)
	defer cancel()
	var size int64
	ks, shared := keysOf(names)
	if err := h.conn.QueryRow(ctx, "SELECT rulelock_lock($1, $2)", ks, shared).Scan(&size); err != nil {
		h.broken = true // some of the locks may be held: Release ends the session
		return 0, fmt.Errorf("lock %v: %w", names, err)
	}
	h.s.noteSize(size)
	return size, nil
}

func (h *holder) Unlock(names []string) {
	if h.broken {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.s.opts.Timeout)
	defer cancel()
	ks, shared := keysOf(names)
	q := "SELECT CASE WHEN s THEN pg_advisory_unlock_shared(k) ELSE pg_advisory_unlock(k) END FROM unnest($1::bigint[], $2::boolean[]) AS u(k, s)"
	if _, err := h.conn.Exec(ctx, q, ks, shared); err != nil {
		h.broken = true
	}
}

func (h *holder) Release() {
	if !h.broken {
		ctx, cancel := context.WithTimeout(context.Background(), h.s.opts.Timeout)
		_, err := h.conn.Exec(ctx, "SELECT pg_advisory_unlock_all()")
		cancel()
		if err == nil {
			h.conn.Release()
			return
		}
	}
	// Whether a lock is still held is unknown: end the session, which
	// releases them all.
	c := h.conn.Hijack()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.Close(ctx)
}

// Unseal opens a sensitive value of the log with its salt from
// rulelock_salts (ledger.Unsealer), so that a replica folds another's
// decisions with the values their rules saw (a limit per card number). A
// salt that is gone is audit.ErrShredded.
func (s *State) Unseal(c audit.Commitment) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	var salt []byte
	err := s.pool.QueryRow(ctx, "SELECT salt FROM rulelock_salts WHERE hmac = $1", c.HMAC[:]).Scan(&salt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("unseal %v: %w", c.HMAC, audit.ErrShredded)
	}
	if err != nil {
		return nil, fmt.Errorf("unseal %v: %w", c.HMAC, err)
	}
	return c.Open(salt)
}

// Err passes on the Err of the Recorder New was given, when it has one
// (gateway.Ready reports it: a log that refuses appends makes the replica
// not ready).
func (s *State) Err() error {
	if f, ok := s.log.(interface{ Err() error }); ok {
		return f.Err()
	}
	return nil
}
