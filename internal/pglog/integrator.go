package pglog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
)

// Errors callers branch on.
var (
	// ErrConflict is returned by an integration whose compare-and-swap
	// found that another integrator published first: nothing was published.
	ErrConflict = errors.New("checkpoint moved: another integrator published first")
	// ErrCorrupt is returned when the stored tree does not match the
	// published checkpoint, or an entry its leaf hash: integration stops.
	ErrCorrupt = errors.New("postgres log corrupt")
)

// IntegratorOptions configure an Integrator. The zero value works.
type IntegratorOptions struct {
	// Interval is how often the integrator integrates new entries, and how
	// often a replica that is not the integrator tries to become it
	// (default 1s).
	Interval time.Duration
	// MaxBatch caps the entries one checkpoint adds (default 4096).
	MaxBatch int
	// Timeout bounds one integration (default 30s): one that takes longer
	// is abandoned, and its connection, with the lock, dropped.
	Timeout time.Duration
	// Logger receives takeovers and failures (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock of Unsigned (default time.Now).
	Now func() time.Time
}

// Integrator builds the Merkle tree over the sequenced entries and signs
// and publishes checkpoints, when it holds the integrator lock. Every
// replica runs one; one at a time integrates.
type Integrator struct {
	cfg    *pgx.ConnConfig
	signer note.Signer
	opts   IntegratorOptions

	leading atomic.Bool

	mu       sync.Mutex // guards the fields below (observe, Unsigned)
	since    time.Time  // entries have waited for a checkpoint since then (zero: none waits)
	target   int64      // the sequence's size seen at targetAt; since covers entries before it
	targetAt time.Time
	observed time.Time // the last observation
}

// NewIntegrator returns an integrator that connects with cfg (a dedicated
// connection, outside any pool: it holds the lock) and signs with s, whose
// name is the log's origin.
func NewIntegrator(cfg *pgx.ConnConfig, s note.Signer, opts IntegratorOptions) *Integrator {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 4096
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	cfg = cfg.Copy()
	cfg.RuntimeParams["synchronous_commit"] = "on"
	// The lock is released when PostgreSQL sees the connection end. A
	// replica that vanished (power, network) sends no FIN: over TCP, make
	// the server probe the idle connection so that it notices within about
	// 11s rather than the system default of two hours. (Ignored on Unix
	// sockets.) A DSN that sets them wins.
	for k, v := range map[string]string{"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3"} {
		if _, ok := cfg.RuntimeParams[k]; !ok {
			cfg.RuntimeParams[k] = v
		}
	}
	return &Integrator{cfg: cfg, signer: s, opts: opts}
}

// Leading reports whether this integrator holds the lock now.
func (in *Integrator) Leading() bool { return in.leading.Load() }

// Run integrates until ctx is done: it connects, tries the lock every
// Interval, and while it holds it integrates every Interval (at once again
// after a full batch). On any error it drops its connection, and with it
// the lock, and starts over, so another replica can take over.
func (in *Integrator) Run(ctx context.Context) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
		in.leading.Store(false)
	}()
	t := time.NewTicker(in.opts.Interval)
	defer t.Stop()
	for {
		more, err := in.step(ctx, &conn)
		if err != nil && ctx.Err() == nil {
			in.opts.Logger.Warn("postgres log: integration failed; starting over", slog.Any("err", err))
			if conn != nil {
				conn.Close(context.Background())
				conn = nil
			}
			if in.leading.Swap(false) {
				in.opts.Logger.Warn("postgres log: no longer the integrator")
			}
		}
		if more && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Flush integrates every entry sequenced so far, once, if the lock is
// free (call it after Run has returned): a replica that stops gracefully
// leaves no entry of its own unsigned when no other replica is left to
// integrate it. When another replica holds the lock, that one integrates,
// and Flush returns nil at once.
func (in *Integrator) Flush(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, in.opts.Timeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, in.cfg)
	if err != nil {
		return fmt.Errorf("flush: connect: %w", err)
	}
	defer conn.Close(context.Background())
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", int64(integratorLock)).Scan(&got); err != nil {
		return fmt.Errorf("flush: try integrator lock: %w", err)
	}
	for got {
		n, err := integrate(ctx, conn, in.signer, in.opts.MaxBatch, nil)
		if err != nil {
			return fmt.Errorf("flush: %w", err)
		}
		if n < in.opts.MaxBatch {
			return nil
		}
	}
	return nil
}

// step connects, tries the lock, and integrates once when it holds it. more
// reports a full batch: there may be more to integrate now.
func (in *Integrator) step(ctx context.Context, conn **pgx.Conn) (more bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, in.opts.Timeout)
	defer cancel()
	if *conn == nil {
		c, err := pgx.ConnectConfig(ctx, in.cfg)
		if err != nil {
			return false, fmt.Errorf("connect: %w", err)
		}
		*conn = c
	}
	var size, next int64
	if err := (*conn).QueryRow(ctx, "SELECT c.size, s.next FROM rulelock_checkpoint c, rulelock_sequence s").Scan(&size, &next); err != nil {
		return false, fmt.Errorf("read log state: %w", err)
	}
	in.observe(size, next, in.opts.Now())
	if !in.leading.Load() {
		var got bool
		if err := (*conn).QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", int64(integratorLock)).Scan(&got); err != nil {
			return false, fmt.Errorf("try integrator lock: %w", err)
		}
		if !got {
			return false, nil
		}
		in.leading.Store(true)
		in.opts.Logger.Info("postgres log: this replica is the integrator")
	}
	n, err := integrate(ctx, *conn, in.signer, in.opts.MaxBatch, nil)
	if err != nil {
		return false, err
	}
	return n == in.opts.MaxBatch, nil
}

// Unsigned returns how long the oldest acknowledged entry that no published
// checkpoint covers has waited, as far as this replica has seen (0 when
// every entry it saw is covered): gateway.Checkpoints. It errs long, by up
// to two Intervals (see observe). While PostgreSQL cannot be read, it keeps
// growing.
func (in *Integrator) Unsigned() time.Duration {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.since.IsZero() {
		return 0
	}
	return in.opts.Now().Sub(in.since)
}

// observe records the published size and the sequence's size at now. An
// entry not seen sequenced at an observation arrived after it: the wait of
// the oldest uncovered entry is counted from the observation before the
// one that first saw it.
func (in *Integrator) observe(size, next int64, now time.Time) {
	in.mu.Lock()
	defer in.mu.Unlock()
	prev := in.observed
	if prev.IsZero() {
		prev = now
	}
	in.observed = now
	switch {
	case in.since.IsZero() && next > size:
		in.since, in.target, in.targetAt = prev, next, now
	case in.since.IsZero() || size < in.target:
		// Nothing waits, or the entries counted from since still wait.
	case next > size:
		// What waited is covered; what waits now was not sequenced at targetAt.
		in.since, in.target, in.targetAt = in.targetAt, next, now
	default:
		in.since = time.Time{}
	}
}

// integrate extends the published tree by up to max sequenced entries in
// one transaction on conn: stores the tiles that change, signs the new
// checkpoint and publishes it by compare-and-swap. It returns how many
// entries it added. It is safe to run concurrently with other integrators
// (the lock only keeps them from wasting work): all but one get
// ErrConflict. beforeWrite, when not nil, is called after the reads and
// before the first write (tests use it to make integrators race).
func integrate(ctx context.Context, conn *pgx.Conn, s note.Signer, max int, beforeWrite func()) (int, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("integrate: %w", err)
	}
	defer tx.Rollback(ctx)
	old, next, err := readState(ctx, tx, s)
	if err != nil {
		return 0, err
	}
	hi := min(next, old.Size+int64(max))
	if hi == old.Size {
		return 0, nil
	}
	r := newTileReader(ctx, tx)
	// The tree we extend must be the published one: a tampered or lost
	// tile stops integration here rather than spreading into new tiles.
	if got, err := tlog.TreeHash(old.Size, r); err != nil || got != old.Root {
		return 0, fmt.Errorf("integrate: %w: the stored tiles do not give the root of checkpoint %d (%v)", ErrCorrupt, old.Size, err)
	}
	if err := addEntries(ctx, tx, r, old.Size, hi); err != nil {
		return 0, err
	}
	root, err := tlog.TreeHash(hi, r)
	if err != nil {
		return 0, fmt.Errorf("integrate: %w", err)
	}
	if beforeWrite != nil {
		beforeWrite()
	}
	if err := storeTiles(ctx, tx, r, old.Size, hi); err != nil {
		return 0, err
	}
	if err := publish(ctx, tx, s, old, audit.Checkpoint{Origin: s.Name(), Size: hi, Root: root}); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, conflict(fmt.Errorf("integrate: commit: %w", err))
	}
	return int(hi - old.Size), nil
}

// readState returns the published tree and the sequence's size, checking
// that s signs for this log and that the sequence is not behind the tree.
func readState(ctx context.Context, tx pgx.Tx, s note.Signer) (old audit.Checkpoint, next int64, err error) {
	var root, msg []byte
	if err := tx.QueryRow(ctx, "SELECT size, root, note FROM rulelock_checkpoint WHERE id = 0").Scan(&old.Size, &root, &msg); err != nil {
		return old, 0, fmt.Errorf("integrate: read checkpoint: %w", err)
	}
	if len(root) != tlog.HashSize {
		return old, 0, fmt.Errorf("integrate: %w: published root of %d bytes", ErrCorrupt, len(root))
	}
	copy(old.Root[:], root)
	if err := checkOrigin(msg, s); err != nil {
		return old, 0, err
	}
	if err := tx.QueryRow(ctx, "SELECT next FROM rulelock_sequence WHERE id = 0").Scan(&next); err != nil {
		return old, 0, fmt.Errorf("integrate: read sequence: %w", err)
	}
	if next < old.Size {
		return old, 0, fmt.Errorf("integrate: %w: %d entries sequenced, but checkpoint %d published", ErrCorrupt, next, old.Size)
	}
	return old, next, nil
}

// storeTiles writes the tiles that change when the tree grows from old to
// size entries; a partial tile's row is overwritten by its wider self.
func storeTiles(ctx context.Context, tx pgx.Tx, r *tileReader, old, size int64) error {
	var b pgx.Batch
	for _, t := range tlog.NewTiles(tileHeight, old, size) {
		data, err := tlog.ReadTileData(t, r)
		if err != nil {
			return fmt.Errorf("integrate: tile %s: %w", audit.TilePath(t), err)
		}
		b.Queue(`INSERT INTO rulelock_tiles VALUES ($1, $2, $3)
			ON CONFLICT (level, idx) DO UPDATE SET data = EXCLUDED.data`, t.L, t.N, data)
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("integrate: store tiles: %w", err)
	}
	return nil
}

// publish signs cp and swaps it for old, the checkpoint this integration
// read: ErrConflict when another integrator published in between.
func publish(ctx context.Context, tx pgx.Tx, s note.Signer, old, cp audit.Checkpoint) error {
	msg, err := note.Sign(&note.Note{Text: string(cp.Text())}, s)
	if err != nil {
		return fmt.Errorf("integrate: sign: %w", err)
	}
	tag, err := tx.Exec(ctx, `UPDATE rulelock_checkpoint SET size = $1, root = $2, note = $3
		WHERE id = 0 AND size = $4 AND root = $5`, cp.Size, cp.Root[:], msg, old.Size, old.Root[:])
	if err != nil {
		return conflict(fmt.Errorf("integrate: publish: %w", err))
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("integrate: publish checkpoint %d over %d: %w", cp.Size, old.Size, ErrConflict)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO rulelock_checkpoints VALUES ($1, $2, $3)", cp.Size, cp.Root[:], msg); err != nil {
		return conflict(fmt.Errorf("integrate: record checkpoint: %w", err))
	}
	return nil
}

// addEntries reads entries [lo, hi) and adds their stored hashes to r's
// overlay, checking that they are contiguous and match their leaf hashes.
func addEntries(ctx context.Context, tx pgx.Tx, r *tileReader, lo, hi int64) error {
	rows, err := tx.Query(ctx, "SELECT idx, leaf, payload FROM rulelock_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx", lo, hi)
	if err != nil {
		return fmt.Errorf("integrate: read entries: %w", err)
	}
	defer rows.Close()
	i := lo
	for rows.Next() {
		var idx int64
		var leaf, payload []byte
		if err := rows.Scan(&idx, &leaf, &payload); err != nil {
			return fmt.Errorf("integrate: read entries: %w", err)
		}
		if idx != i {
			return fmt.Errorf("integrate: %w: entry %d missing (next row is %d)", ErrCorrupt, i, idx)
		}
		h := tlog.RecordHash(payload)
		if !bytes.Equal(h[:], leaf) {
			return fmt.Errorf("integrate: %w: entry %d does not match its leaf hash", ErrCorrupt, i)
		}
		hs, err := tlog.StoredHashesForRecordHash(i, h, r)
		if err != nil {
			return fmt.Errorf("integrate: entry %d: %w", i, err)
		}
		base := tlog.StoredHashIndex(0, i)
		for k, h := range hs {
			r.overlay[base+int64(k)] = h
		}
		i++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("integrate: read entries: %w", err)
	}
	if i != hi {
		return fmt.Errorf("integrate: %w: entry %d missing (sequenced up to %d)", ErrCorrupt, i, hi)
	}
	return nil
}

// conflict marks a unique violation (another integrator's rows) as ErrConflict.
func conflict(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return fmt.Errorf("%w (%w)", ErrConflict, err)
	}
	return err
}

// checkOrigin refuses a signer that is not the published log's.
func checkOrigin(prev []byte, s note.Signer) error {
	if prev == nil {
		return nil
	}
	_, err := note.Open(prev, note.VerifierList())
	var uv *note.UnverifiedNoteError
	if !errors.As(err, &uv) {
		return fmt.Errorf("integrate: %w: published checkpoint: %v", ErrCorrupt, err)
	}
	cp, err := audit.ParseCheckpoint([]byte(uv.Note.Text))
	if err != nil {
		return fmt.Errorf("integrate: %w: published checkpoint: %v", ErrCorrupt, err)
	}
	if cp.Origin != s.Name() {
		return fmt.Errorf("integrate: signer %q, but the log's origin is %q: %w", s.Name(), cp.Origin, audit.ErrWrongKey)
	}
	return nil
}
