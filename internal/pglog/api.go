package pglog

import (
	"context"
	"errors"
	"math"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rulelock/rulelock/audit"
)

// apiTimeout bounds one read of the API's log routes.
const apiTimeout = 5 * time.Second

// API is the log as the gateway's HTTP API serves it (httpapi.LogAPI): the
// latest published checkpoint, entries, receipts and the tiles, read from
// PostgreSQL, so that every replica serves the same log. A read PostgreSQL
// cannot answer is an error (the API's 404 for an entry, 503 for a tile),
// never a shorter log.
type API struct {
	r  *Reader
	in *Integrator // for Unsigned; nil: not reported
}

// NewAPI returns the API's view of the log that pool reaches; in, when not
// nil, is this replica's integrator, whose Unsigned /readyz reports.
func NewAPI(pool *pgxpool.Pool, in *Integrator) *API {
	return &API{r: NewReader(pool), in: in}
}

// Size returns the number of entries sequenced, or 0 when PostgreSQL does
// not answer (only /metrics reads it).
func (a *API) Size() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	var next int64
	if err := a.r.pool.QueryRow(ctx, "SELECT next FROM rulelock_sequence WHERE id = 0").Scan(&next); err != nil {
		return 0
	}
	return next
}

// Checkpoint returns the latest published checkpoint, nil before the first
// or when PostgreSQL does not answer.
func (a *API) Checkpoint() []byte {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	b, err := a.r.Checkpoint(ctx)
	if err != nil {
		return nil
	}
	return b
}

// ReadCheckpoint returns the latest published checkpoint, nil before the
// first, and an error when PostgreSQL does not answer
// (httpapi.CheckpointReader: the API answers 503 then).
func (a *API) ReadCheckpoint() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	b, err := a.r.Checkpoint(ctx)
	if errors.Is(err, ErrNoCheckpoint) {
		return nil, nil
	}
	return b, err
}

// Entry returns entry i as encoded in the log. An error other than "no
// such entry" says the log is unavailable (Unavailable), and the API
// answers 503 rather than 404.
func (a *API) Entry(i int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	b, err := a.r.Entry(ctx, i)
	if err != nil && !errors.Is(err, ErrNoEntry) {
		return nil, unavailable{err}
	}
	return b, err
}

// Receipt returns a self-contained receipt for entry i; as Entry, an
// error other than "not covered yet" is Unavailable.
func (a *API) Receipt(i int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	b, err := a.r.Receipt(ctx, i)
	if err != nil && !errors.Is(err, audit.ErrNotCovered) {
		return nil, unavailable{err}
	}
	return b, err
}

// unavailable marks a read PostgreSQL could not answer, for the API (which
// declares interface{ Unavailable() bool }).
type unavailable struct{ err error }

func (u unavailable) Error() string     { return "postgres log unavailable: " + u.err.Error() }
func (u unavailable) Unwrap() error     { return u.err }
func (u unavailable) Unavailable() bool { return true }

// Tiles serves the C2SP tlog-tiles layout (Reader.Handler).
func (a *API) Tiles() http.Handler { return a.r.Handler() }

// CheckpointStatus reports this replica's view of checkpoint signing for
// /readyz and /metrics (httpapi.CheckpointReporter): the published tree.
func (a *API) CheckpointStatus() audit.CheckpointStatus {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	var size int64
	var msg []byte
	err := a.r.pool.QueryRow(ctx, "SELECT size, note FROM rulelock_checkpoint WHERE id = 0").Scan(&size, &msg)
	return audit.CheckpointStatus{Running: true, Size: size, Signed: msg != nil, Err: err}
}

// Unsigned returns how long the oldest entry without a published
// checkpoint has waited, as this replica's integrator saw it.
func (a *API) Unsigned() time.Duration {
	if a.in == nil {
		return 0
	}
	return a.in.Unsigned()
}

// Live is the log read back as it grows (gateway.LogReader): the gateway
// reads final requests and, when a new policy needs state the ledger does
// not keep, folds the log again. Size is the sequence's size when it is
// called; when PostgreSQL does not answer it is a size no read can
// satisfy, so that a fold fails rather than seeing a shorter log.
type Live struct {
	s *Snapshot
}

// Live returns the live log.
func (r *Reader) Live() *Live {
	return &Live{s: &Snapshot{r: r, size: math.MaxInt64, timeout: time.Minute}}
}

// Size returns the number of entries sequenced now.
func (l *Live) Size() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	var next int64
	if err := l.s.r.pool.QueryRow(ctx, "SELECT next FROM rulelock_sequence WHERE id = 0").Scan(&next); err != nil {
		return math.MaxInt64
	}
	return next
}

// ReadEntries returns the encoded entries [lo, hi), in order; an entry
// that is not there is an error.
func (l *Live) ReadEntries(lo, hi int64) ([][]byte, error) { return l.s.ReadEntries(lo, hi) }

// Blob returns the content of a field stored by digest.
func (l *Live) Blob(d audit.Digest) ([]byte, error) { return l.s.Blob(d) }
