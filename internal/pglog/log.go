package pglog

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
)

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("postgres log closed")

// ErrOutcomeRecorded is returned by Append for an outcome entry of a request
// that already has one (written by another replica, or by the reconciler
// after the request's lease expired): nothing was appended. A request has
// at most one outcome entry in the log, whichever replica writes it.
var ErrOutcomeRecorded error = outcomeRecorded{}

type outcomeRecorded struct{}

func (outcomeRecorded) Error() string { return "the request already has an outcome entry" }

// OutcomeRecorded marks the error for the gateway, which declares the
// interface (gateway.Config.Lease).
func (outcomeRecorded) OutcomeRecorded() bool { return true }

// Options configure a Log. The zero value works.
type Options struct {
	// MaxBatch caps the entries committed by one transaction (default 256).
	MaxBatch int
	// MaxInline is the longest field stored inline; longer fields are
	// stored by digest in rulelock_blobs (default 4096 bytes, as audit).
	MaxInline int
	// MaxRaw is the longest raw request body kept in rulelock_blobs; a
	// longer one is recorded by digest and size only (default 1 MiB).
	MaxRaw int64
	// Timeout bounds one batch's transaction (default 10s): an append never
	// waits longer than that on an unresponsive PostgreSQL.
	Timeout time.Duration
	// Rand is the source of commitment salts (default crypto/rand).
	Rand io.Reader
	// Probe is how often the log checks that PostgreSQL answers (default
	// 1s); Err reports the last failure until a check or an append
	// succeeds.
	Probe time.Duration
}

func (o *Options) setDefaults() {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 256
	}
	if o.MaxInline <= 0 {
		o.MaxInline = 4096
	}
	if o.MaxRaw <= 0 {
		o.MaxRaw = 1 << 20
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Probe <= 0 {
		o.Probe = time.Second
	}
}

// Log appends entries to the log in PostgreSQL. Several Logs, in one
// process or in several replicas, may append to the same database: their
// entries get contiguous indexes in one total order. It is safe for
// concurrent use.
type Log struct {
	pool *pgxpool.Pool
	opts Options

	mu     sync.RWMutex // guards closed and sends on queue
	closed bool
	queue  chan *request
	done   chan struct{}
	stop   chan struct{} // closed by Close: stops the probe

	failed atomic.Pointer[error] // the last failure, nil when PostgreSQL answers
}

type request struct {
	outcome string // the request id of an outcome entry, claimed in rulelock_outcomes
	payload []byte
	leaf    tlog.Hash
	blobs   [][]byte
	side    []sideRecord
	salts   []audit.Salt
	done    chan result
}

type sideRecord struct {
	field  string
	hmac   audit.Digest
	sealed []byte
}

type result struct {
	r   audit.Receipt
	err error
}

// Open returns a Log appending through pool, creating the schema if
// needed. The pool's connections should have synchronous_commit on (the
// server's default; Connect sets it).
func Open(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Log, error) {
	opts.setDefaults()
	if err := migrate(ctx, pool); err != nil {
		return nil, fmt.Errorf("open postgres log: %w", err)
	}
	l := &Log{pool: pool, opts: opts, queue: make(chan *request, opts.MaxBatch), done: make(chan struct{}), stop: make(chan struct{})}
	go l.run()
	go l.probe()
	return l, nil
}

// Connect returns a pool for dsn whose sessions commit synchronously, so
// that a COMMIT that returned is on the server's disk.
func Connect(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return pool, nil
}

// Append writes e to the log and returns once the transaction that holds
// it committed. The entry is copied; sensitive fields become commitments
// and long fields are stored by digest, as audit.Log.Append does. An
// error means the entry was not acknowledged: it may or may not be in the
// log, but the caller must act as if it were not.
func (l *Log) Append(ctx context.Context, e *audit.Entry) (audit.Receipt, error) {
	req, err := l.prepare(e)
	if err != nil {
		return audit.Receipt{}, err
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return audit.Receipt{}, fmt.Errorf("append: %w", ErrClosed)
	}
	select {
	case l.queue <- req:
		l.mu.RUnlock()
	case <-ctx.Done():
		l.mu.RUnlock()
		return audit.Receipt{}, fmt.Errorf("append: %w", ctx.Err())
	}
	select {
	case res := <-req.done:
		return res.r, res.err
	case <-ctx.Done():
		return audit.Receipt{}, fmt.Errorf("append: %w", ctx.Err())
	}
}

// Ready reports whether PostgreSQL answers: nil when appends can succeed.
func (l *Log) Ready(ctx context.Context) error {
	if err := l.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres log: %w", err)
	}
	return nil
}

// Err returns why the log cannot take entries now, nil when it can: the
// last failure of an append or of the probe, until one of them succeeds.
// The gateway refuses every action while it is not nil (gateway.Ready);
// unlike the embedded log's, the failure is not final: when PostgreSQL
// answers again, the next probe clears it, without a restart.
func (l *Log) Err() error {
	if p := l.failed.Load(); p != nil {
		return *p
	}
	return nil
}

func (l *Log) setErr(err error) {
	if err == nil {
		l.failed.Store(nil)
		return
	}
	err = fmt.Errorf("postgres unavailable: %w", err)
	l.failed.Store(&err)
}

// probe pings PostgreSQL every Options.Probe until Close, so that /readyz
// says false within a probe of an outage even when no append was tried,
// and true again within a probe of the recovery.
func (l *Log) probe() {
	t := time.NewTicker(l.opts.Probe)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*l.opts.Probe)
		l.setErr(l.pool.Ping(ctx))
		cancel()
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
	}
}

// Close waits for queued appends and stops the batcher. It does not close
// the pool.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return fmt.Errorf("close postgres log: %w", ErrClosed)
	}
	l.closed = true
	close(l.queue)
	close(l.stop)
	l.mu.Unlock()
	<-l.done
	return nil
}

// run is the batcher: it takes everything queued (up to MaxBatch) and
// commits it in one transaction, with no timer.
func (l *Log) run() {
	defer close(l.done)
	for req := range l.queue {
		batch := []*request{req}
	drain:
		for len(batch) < l.opts.MaxBatch {
			select {
			case r, ok := <-l.queue:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		first, kept, err := l.commit(batch)
		if err != nil {
			l.setErr(err)
		} else {
			l.failed.Store(nil)
		}
		i := int64(0)
		for _, r := range batch {
			switch {
			case err != nil:
				r.done <- result{err: fmt.Errorf("append: %w", err)}
			case !kept[r]:
				r.done <- result{err: fmt.Errorf("append outcome of %s: %w", r.outcome, ErrOutcomeRecorded)}
			default:
				r.done <- result{r: audit.Receipt{Index: first + i, LeafHash: r.leaf}}
				i++
			}
		}
	}
}

// commit sequences and inserts batch in one transaction and returns the
// index of its first entry. A transaction that failed on its connection
// before COMMIT was sent did not commit: it is tried again, on another
// connection, as long as there may be broken ones in the pool (after
// PostgreSQL restarted), so that the first appends after a recovery do not
// fail for nothing. A failed COMMIT is never retried: it may have committed.
func (l *Log) commit(batch []*request) (int64, map[*request]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.Timeout)
	defer cancel()
	tries := int(l.pool.Config().MaxConns) + 1
	for {
		first, kept, committing, err := l.try(ctx, batch)
		tries--
		var pe *pgconn.PgError
		if err == nil || committing || tries == 0 || ctx.Err() != nil || errors.As(err, &pe) {
			return first, kept, err
		}
	}
}

// try is one attempt of commit; committing reports that the error came
// from COMMIT itself, or from a connection that failed once COMMIT may
// have been sent. kept holds the requests appended: all but the outcome
// entries of requests that already have one.
//
// The transaction is pipelined: BEGIN, the sequencing UPDATE, the INSERT
// of the entries (their indexes computed from the counter in the same
// statement), the blobs and sensitive values, and COMMIT go to the server
// in one round trip (two when the batch holds outcome entries, whose
// claims decide which entries get an index). A statement that fails
// aborts the transaction: PostgreSQL skips what follows it, COMMIT
// included, and the pool drops a connection left in a transaction.
func (l *Log) try(ctx context.Context, all []*request) (first int64, kept map[*request]bool, committing bool, err error) {
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return 0, nil, false, err
	}
	defer conn.Release()
	batch := all
	begun := false
	if ids, firstOf := outcomeIDs(all); len(ids) > 0 {
		if batch, err = claimOutcomes(ctx, conn, all, ids, firstOf); err != nil {
			return 0, nil, false, err
		}
		begun = true
	}
	kept = make(map[*request]bool, len(batch))
	for _, r := range batch {
		kept[r] = true
	}
	if len(batch) == 0 {
		_, err := conn.Exec(ctx, "ROLLBACK") // nothing to append, nothing claimed
		return 0, kept, false, err
	}
	var b pgx.Batch
	if !begun {
		b.Queue("BEGIN")
	}
	n := len(batch)
	// The row lock on the counter is held until COMMIT: the sequencer.
	b.Queue("UPDATE rulelock_sequence SET next = next + $1 WHERE id = 0 RETURNING next", n)
	leaves, payloads := make([][]byte, n), make([][]byte, n)
	for i, r := range batch {
		leaves[i], payloads[i] = r.leaf[:], r.payload
	}
	b.Queue(`INSERT INTO rulelock_entries (idx, leaf, payload)
		SELECT s.next - $1 + t.ord - 1, t.leaf, t.payload
		FROM rulelock_sequence s, unnest($2::bytea[], $3::bytea[]) WITH ORDINALITY AS t(leaf, payload, ord)
		WHERE s.id = 0`, n, leaves, payloads)
	for i, r := range batch {
		for _, bl := range r.blobs {
			d := sha256.Sum256(bl)
			b.Queue("INSERT INTO rulelock_blobs VALUES ($1, $2) ON CONFLICT DO NOTHING", d[:], bl)
		}
		for _, sd := range r.side {
			b.Queue(`INSERT INTO rulelock_sensitive SELECT s.next - $1 + $2, $3, $4, $5 FROM rulelock_sequence s WHERE s.id = 0`,
				n, i, sd.field, sd.hmac[:], sd.sealed)
		}
		for _, sl := range r.salts {
			b.Queue(`INSERT INTO rulelock_salts SELECT $3, s.next - $1 + $2, $4 FROM rulelock_sequence s WHERE s.id = 0 ON CONFLICT DO NOTHING`,
				n, i, sl.HMAC[:], sl.Salt)
		}
	}
	b.Queue("COMMIT")
	br := conn.SendBatch(ctx, &b)
	defer br.Close()
	// failed is an error before COMMIT: a statement PostgreSQL refused
	// (the transaction is aborted, COMMIT skipped), or a connection that
	// failed before anything was sent; otherwise COMMIT may have run.
	failed := func(what string, err error) (int64, map[*request]bool, bool, error) {
		var pe *pgconn.PgError
		return 0, nil, !errors.As(err, &pe) && !pgconn.SafeToRetry(err), fmt.Errorf("%s: %w", what, err)
	}
	if !begun {
		if _, err := br.Exec(); err != nil {
			return failed("begin", err)
		}
	}
	var next int64
	if err := br.QueryRow().Scan(&next); err != nil {
		return failed("sequence", err)
	}
	if _, err := br.Exec(); err != nil {
		return failed("insert entries", err)
	}
	for range b.Len() - 3 - btoi(!begun) {
		if _, err := br.Exec(); err != nil {
			return failed("insert blobs and sensitive values", err)
		}
	}
	if _, err := br.Exec(); err != nil {
		return 0, nil, true, fmt.Errorf("commit: %w", err)
	}
	if err := br.Close(); err != nil {
		return 0, nil, true, fmt.Errorf("commit: %w", err)
	}
	return next - int64(n), kept, false, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// outcomeIDs returns the request ids of the outcome entries in batch, each
// once, and the first entry of each.
func outcomeIDs(batch []*request) ([]string, map[string]*request) {
	var ids []string
	first := map[string]*request{}
	for _, r := range batch {
		if r.outcome != "" && first[r.outcome] == nil {
			first[r.outcome] = r
			ids = append(ids, r.outcome)
		}
	}
	return ids, first
}

// claimOutcomes begins the transaction on conn and claims in it the
// requests ids of the outcome entries of batch (rulelock_outcomes, whose
// key is the request id); it returns batch without the outcome entries of
// requests that already have one, in the database or earlier in batch.
// Two transactions that claim the same request serialise on its key: the
// second sees the first's row once it commits, and drops its entry. Claims
// are made in request-id order, so that two batches never wait on each
// other's claims.
func claimOutcomes(ctx context.Context, conn *pgxpool.Conn, batch []*request, ids []string, first map[string]*request) ([]*request, error) {
	var b pgx.Batch
	b.Queue("BEGIN")
	b.Queue(`INSERT INTO rulelock_outcomes (request_id)
		SELECT id FROM unnest($1::text[]) AS id ORDER BY id
		ON CONFLICT DO NOTHING RETURNING request_id`, ids)
	br := conn.SendBatch(ctx, &b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("claim outcomes: %w", err)
	}
	claimed, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("claim outcomes: %w", err)
	}
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("claim outcomes: %w", err)
	}
	won := make(map[*request]bool, len(claimed))
	for _, id := range claimed {
		won[first[id]] = true
	}
	out := batch[:0:0]
	for _, r := range batch {
		if r.outcome == "" || won[r] {
			out = append(out, r)
		}
	}
	return out, nil
}

// prepare turns e into the payload to write, as audit.Log does: sensitive
// fields become commitments, long fields digests.
func (l *Log) prepare(e *audit.Entry) (*request, error) {
	c := *e
	if c.Action.Text != "" && c.ActionSHA256.IsZero() {
		c.ActionSHA256 = sha256.Sum256([]byte(c.Action.Text))
	}
	req := &request{done: make(chan result, 1), salts: c.Salts}
	if c.Kind == audit.KindOutcome {
		req.outcome = c.RequestID
	}
	c.Salts = nil
	names := [...]string{"action", "instruction", "reasoning", "result", "state"}
	for i, f := range [...]*audit.Field{&c.Action, &c.Instruction, &c.Reasoning, &c.Result, &c.State} {
		if f.Text == "" {
			f.Sensitive = false
			continue
		}
		switch {
		case f.Sensitive:
			cm, salt, err := audit.Commit(l.opts.Rand, []byte(f.Text))
			if err != nil {
				return nil, fmt.Errorf("append: %w", err)
			}
			req.side = append(req.side, sideRecord{field: names[i], hmac: cm.HMAC, sealed: cm.Sealed})
			req.salts = append(req.salts, salt)
			*f = audit.Field{Commitment: cm.HMAC}
		case len(f.Text) > l.opts.MaxInline:
			req.blobs = append(req.blobs, []byte(f.Text))
			*f = audit.Field{Digest: sha256.Sum256([]byte(f.Text)), Size: int64(len(f.Text))}
		}
	}
	if c.Raw.Text != "" && int64(len(c.Raw.Text)) <= l.opts.MaxRaw {
		req.blobs = append(req.blobs, []byte(c.Raw.Text))
		c.Raw = audit.Field{Digest: sha256.Sum256([]byte(c.Raw.Text)), Size: int64(len(c.Raw.Text))}
	}
	b, err := c.Encode()
	if err != nil {
		return nil, fmt.Errorf("append: %w", err)
	}
	req.payload = b
	req.leaf = tlog.RecordHash(b)
	return req, nil
}
