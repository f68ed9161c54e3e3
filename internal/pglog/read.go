package pglog

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
)

// ErrNoEntry is returned for an index that is not in the log.
var ErrNoEntry = errors.New("not in the log")

// Entry returns the encoded entry at index i (acknowledged, perhaps not yet
// covered by a checkpoint).
func (r *Reader) Entry(ctx context.Context, i int64) ([]byte, error) {
	var b []byte
	err := r.pool.QueryRow(ctx, "SELECT payload FROM rulelock_entries WHERE idx = $1", i).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("read entry %d: %w", i, ErrNoEntry)
	}
	if err != nil {
		return nil, fmt.Errorf("read entry %d: %w", i, err)
	}
	return b, nil
}

// Receipt returns a self-contained receipt for entry i (audit.FormatReceipt:
// the entry, its inclusion proof and the latest checkpoint), from one
// snapshot of the database. An entry the checkpoint does not cover yet is
// audit.ErrNotCovered.
func (r *Reader) Receipt(ctx context.Context, i int64) ([]byte, error) {
	tx, err := r.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("receipt: %w", err)
	}
	defer tx.Rollback(ctx)
	var size int64
	var msg []byte
	if err := tx.QueryRow(ctx, "SELECT size, note FROM rulelock_checkpoint WHERE id = 0").Scan(&size, &msg); err != nil {
		return nil, fmt.Errorf("receipt: %w", err)
	}
	if i < 0 || i >= size || msg == nil {
		return nil, fmt.Errorf("receipt for entry %d: %w", i, audit.ErrNotCovered)
	}
	var entry []byte
	if err := tx.QueryRow(ctx, "SELECT payload FROM rulelock_entries WHERE idx = $1", i).Scan(&entry); err != nil {
		return nil, fmt.Errorf("receipt for entry %d: %w", i, err)
	}
	proof, err := tlog.ProveRecord(size, i, newTileReader(ctx, tx))
	if err != nil {
		return nil, fmt.Errorf("receipt for entry %d: %w", i, err)
	}
	return audit.FormatReceipt(entry, i, proof, msg), nil
}

// Snapshot is the log as of one moment, read back for a rebuild of the
// gateway's state (gateway.LogReader): its size is fixed when it is taken,
// and a read that PostgreSQL cannot answer is an error, never a shorter log.
type Snapshot struct {
	r       *Reader
	size    int64
	timeout time.Duration
}

// Snapshot returns the log of every acknowledged entry now.
func (r *Reader) Snapshot(ctx context.Context) (*Snapshot, error) {
	var next int64
	if err := r.pool.QueryRow(ctx, "SELECT next FROM rulelock_sequence WHERE id = 0").Scan(&next); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &Snapshot{r: r, size: next, timeout: time.Minute}, nil
}

// Size returns the number of entries in the snapshot.
func (s *Snapshot) Size() int64 { return s.size }

// ReadEntries returns the encoded entries [lo, hi), in order.
func (s *Snapshot) ReadEntries(lo, hi int64) ([][]byte, error) {
	if lo < 0 || hi > s.size || lo > hi {
		return nil, fmt.Errorf("read entries [%d, %d): out of range [0, %d)", lo, hi, s.size)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	rows, err := s.r.pool.Query(ctx, "SELECT idx, payload FROM rulelock_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx", lo, hi)
	if err != nil {
		return nil, fmt.Errorf("read entries [%d, %d): %w", lo, hi, err)
	}
	defer rows.Close()
	out := make([][]byte, 0, hi-lo)
	for rows.Next() {
		var idx int64
		var b []byte
		if err := rows.Scan(&idx, &b); err != nil {
			return nil, fmt.Errorf("read entries [%d, %d): %w", lo, hi, err)
		}
		if idx != lo+int64(len(out)) {
			return nil, fmt.Errorf("read entry %d: %w: missing", lo+int64(len(out)), ErrCorrupt)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read entries [%d, %d): %w", lo, hi, err)
	}
	if int64(len(out)) != hi-lo {
		return nil, fmt.Errorf("read entry %d: %w: missing", lo+int64(len(out)), ErrCorrupt)
	}
	return out, nil
}

// Blob returns the content of a field stored by digest.
func (s *Snapshot) Blob(d audit.Digest) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	var b []byte
	if err := s.r.pool.QueryRow(ctx, "SELECT content FROM rulelock_blobs WHERE digest = $1", d[:]).Scan(&b); err != nil {
		return nil, fmt.Errorf("read blob %v: %w", d, err)
	}
	if sha256.Sum256(b) != d {
		return nil, fmt.Errorf("read blob %v: content does not match digest", d)
	}
	return b, nil
}
