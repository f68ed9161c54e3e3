package pglog

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
)

// tileHeight is the C2SP tlog-tiles tile height, as audit's: 256 hashes.
const tileHeight = 8

// querier is what reading needs of a connection, pool or transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// tileReader is a tlog.HashReader over the hash tiles in PostgreSQL, with
// the hashes an integration adds on top (overlay) before they are tiled.
type tileReader struct {
	ctx     context.Context
	q       querier
	tiles   map[[2]int64][]byte // (level, index) -> data as stored
	overlay map[int64]tlog.Hash
}

func newTileReader(ctx context.Context, q querier) *tileReader {
	return &tileReader{ctx: ctx, q: q, tiles: map[[2]int64][]byte{}, overlay: map[int64]tlog.Hash{}}
}

func (r *tileReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if h, ok := r.overlay[x]; ok {
			out[i] = h
			continue
		}
		t := tlog.TileForIndex(tileHeight, x)
		data, err := r.tile(t.L, t.N)
		if err != nil {
			return nil, err
		}
		if out[i], err = tlog.HashFromTile(t, data, x); err != nil {
			return nil, fmt.Errorf("read hash %d: %w", x, err)
		}
	}
	return out, nil
}

// tile returns the stored data of a tile (nil when there is none yet).
func (r *tileReader) tile(level int, n int64) ([]byte, error) {
	k := [2]int64{int64(level), n}
	if d, ok := r.tiles[k]; ok {
		return d, nil
	}
	var d []byte
	err := r.q.QueryRow(r.ctx, "SELECT data FROM rulelock_tiles WHERE level = $1 AND idx = $2", level, n).Scan(&d)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("read tile %d/%d: %w", level, n, err)
	}
	r.tiles[k] = d
	return d, nil
}

// Reader reads the published log: the latest checkpoint, hash tiles and
// entry bundles in the C2SP tlog-tiles layout.
type Reader struct {
	pool *pgxpool.Pool
}

// NewReader returns a Reader of the log in pool's database.
func NewReader(pool *pgxpool.Pool) *Reader { return &Reader{pool: pool} }

// ErrNoTile is returned for a tile or entry bundle beyond the published
// tree. It is fs.ErrNotExist too.
var ErrNoTile = fmt.Errorf("no such tile in the published tree: %w", fs.ErrNotExist)

// ErrNoCheckpoint is returned when no checkpoint was published yet.
var ErrNoCheckpoint = errors.New("no checkpoint published yet")

// Checkpoint returns the latest signed checkpoint note.
func (r *Reader) Checkpoint(ctx context.Context) ([]byte, error) {
	return checkpointNote(ctx, r.pool)
}

func checkpointNote(ctx context.Context, q querier) ([]byte, error) {
	var note []byte
	if err := q.QueryRow(ctx, "SELECT note FROM rulelock_checkpoint WHERE id = 0").Scan(&note); err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	if note == nil {
		return nil, ErrNoCheckpoint
	}
	return note, nil
}

// Tile returns the data of t: a hash tile, or for t.L == -1 the entry
// bundle of level-0 tile t.N, each of width t.W, as audit.TilePath names
// them. A tile beyond the published tree is ErrNoTile (which is also
// fs.ErrNotExist).
func (r *Reader) Tile(ctx context.Context, t tlog.Tile) ([]byte, error) {
	return readTile(ctx, r.pool, t)
}

func readTile(ctx context.Context, q querier, t tlog.Tile) ([]byte, error) {
	if t.H != tileHeight || t.W < 1 || t.W > 1<<tileHeight {
		return nil, fmt.Errorf("read tile %s: %w", audit.TilePath(t), ErrNoTile)
	}
	if t.L == -1 {
		return readBundle(ctx, q, t)
	}
	var d []byte
	err := q.QueryRow(ctx, "SELECT data FROM rulelock_tiles WHERE level = $1 AND idx = $2", t.L, t.N).Scan(&d)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && len(d) < t.W*tlog.HashSize {
		return nil, fmt.Errorf("read tile %s: %w", audit.TilePath(t), ErrNoTile)
	}
	if err != nil {
		return nil, fmt.Errorf("read tile %s: %w", audit.TilePath(t), err)
	}
	return d[:t.W*tlog.HashSize], nil
}

// readBundle returns entry bundle t: each entry as a big-endian uint16
// length and the entry.
func readBundle(ctx context.Context, q querier, t tlog.Tile) ([]byte, error) {
	lo := t.N << tileHeight
	// Only entries the published tree covers: a bundle is part of the tree.
	var size int64
	if err := q.QueryRow(ctx, "SELECT size FROM rulelock_checkpoint WHERE id = 0").Scan(&size); err != nil {
		return nil, fmt.Errorf("read entry bundle %s: %w", audit.TilePath(t), err)
	}
	if lo+int64(t.W) > size {
		return nil, fmt.Errorf("read entry bundle %s: %w", audit.TilePath(t), ErrNoTile)
	}
	rows, err := q.Query(ctx, "SELECT idx, payload FROM rulelock_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx", lo, lo+int64(t.W))
	if err != nil {
		return nil, fmt.Errorf("read entry bundle %s: %w", audit.TilePath(t), err)
	}
	defer rows.Close()
	var b []byte
	next := lo
	for rows.Next() {
		var idx int64
		var e []byte
		if err := rows.Scan(&idx, &e); err != nil {
			return nil, fmt.Errorf("read entry bundle %s: %w", audit.TilePath(t), err)
		}
		if idx != next || len(e) > audit.MaxEntrySize {
			return nil, fmt.Errorf("read entry bundle %s: entry %d: bad row", audit.TilePath(t), next)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(e)))
		b = append(b, e...)
		next++
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read entry bundle %s: %w", audit.TilePath(t), err)
	}
	if next != lo+int64(t.W) {
		return nil, fmt.Errorf("read entry bundle %s: %w", audit.TilePath(t), ErrNoTile)
	}
	return b, nil
}

// Export writes the published log to dir as a C2SP tlog-tiles directory
// (checkpoint, tile/<L>/<N>[.p/<W>], tile/entries/<N>[.p/<W>]), from one
// snapshot of the database, for audit.VerifyTiles (rulelock verify). It
// returns the size of the tree it exported.
func (r *Reader) Export(ctx context.Context, dir string) (int64, error) {
	tx, err := r.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	defer tx.Rollback(ctx)
	note, err := checkpointNote(ctx, tx)
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	var size int64
	if err := tx.QueryRow(ctx, "SELECT size FROM rulelock_checkpoint WHERE id = 0").Scan(&size); err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	for _, t := range tlog.NewTiles(tileHeight, 0, size) {
		data, err := readTile(ctx, tx, t)
		if err != nil {
			return 0, fmt.Errorf("export: %w", err)
		}
		if err := writeFile(filepath.Join(dir, audit.TilePath(t)), data); err != nil {
			return 0, err
		}
		if t.L != 0 {
			continue
		}
		t.L = -1
		if data, err = readTile(ctx, tx, t); err != nil {
			return 0, fmt.Errorf("export: %w", err)
		}
		if err := writeFile(filepath.Join(dir, audit.TilePath(t)), data); err != nil {
			return 0, err
		}
	}
	if err := exportBlobs(ctx, tx, dir); err != nil {
		return 0, err
	}
	if err := writeFile(filepath.Join(dir, "checkpoint"), note); err != nil {
		return 0, err
	}
	return size, nil
}

// exportBlobs writes the fields stored by digest to dir/blobs/<hex
// digest>, which `rulelock verify --replay` reads beside the tiles.
func exportBlobs(ctx context.Context, tx pgx.Tx, dir string) error {
	rows, err := tx.Query(ctx, "SELECT digest, content FROM rulelock_blobs ORDER BY digest")
	if err != nil {
		return fmt.Errorf("export blobs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d, b []byte
		if err := rows.Scan(&d, &b); err != nil {
			return fmt.Errorf("export blobs: %w", err)
		}
		if err := writeFile(filepath.Join(dir, "blobs", hex.EncodeToString(d)), b); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("export blobs: %w", err)
	}
	return nil
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// Handler serves the log in the C2SP tlog-tiles layout: GET /checkpoint,
// /tile/<L>/<N>[.p/<W>] and /tile/entries/<N>[.p/<W>]. Mount it under a
// prefix with http.StripPrefix.
func (r *Reader) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		var data []byte
		var err error
		path := strings.TrimPrefix(req.URL.Path, "/")
		if path == "checkpoint" {
			data, err = r.Checkpoint(req.Context())
			w.Header().Set("Cache-Control", "no-store")
		} else {
			t, perr := parseTilePath(path)
			if perr != nil {
				http.NotFound(w, req)
				return
			}
			data, err = r.Tile(req.Context(), t)
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		}
		switch {
		// Not os.ErrNotExist: a Unix socket gone with its server is
		// ENOENT too, and an outage is 503, never "no such tile".
		case errors.Is(err, ErrNoTile) || errors.Is(err, ErrNoCheckpoint):
			http.NotFound(w, req)
			return
		case err != nil:
			// PostgreSQL unavailable: fail closed, say nothing of the cause.
			http.Error(w, "log unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(data)
	})
}

// parseTilePath parses audit.TilePath's form through tlog.ParseTilePath,
// which names the height and "data" for entry bundles.
func parseTilePath(p string) (tlog.Tile, error) {
	rest, ok := strings.CutPrefix(p, "tile/")
	if !ok {
		return tlog.Tile{}, errors.New("not a tile path")
	}
	if b, ok := strings.CutPrefix(rest, "entries/"); ok {
		rest = "data/" + b
	}
	t, err := tlog.ParseTilePath(fmt.Sprintf("tile/%d/%s", tileHeight, rest))
	if err != nil || audit.TilePath(t) != p {
		return tlog.Tile{}, errors.New("not a tile path")
	}
	return t, nil
}
