package audit

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/internal/fsx"
)

// Checkpoint is the body of a C2SP tlog-checkpoint: the log's origin, the
// tree size and the RFC 6962 root hash, one per line:
//
//	rulelock.example.com/audit
//	1234
//	3Yw1kV3gE7o6cN0tK2QWGm5y1cJb5cDjb8Gyo0yG0sQ=
//
// The checkpoint is the text of a signed note whose key name is the origin.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// Text returns the note text of c.
func (c Checkpoint) Text() []byte {
	return fmt.Appendf(nil, "%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:]))
}

// ParseCheckpoint parses the text of a checkpoint note. Extension lines after
// the root hash are allowed and ignored; anything else non-canonical is an
// error, and so is a size over MaxTreeSize.
func ParseCheckpoint(text []byte) (Checkpoint, error) {
	s := string(text)
	if !strings.HasSuffix(s, "\n") {
		return Checkpoint{}, errors.New("parse checkpoint: missing final newline")
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) < 3 {
		return Checkpoint{}, errors.New("parse checkpoint: want origin, size and root hash lines")
	}
	for _, ext := range lines[3:] {
		if ext == "" {
			return Checkpoint{}, errors.New("parse checkpoint: empty extension line")
		}
	}
	c := Checkpoint{Origin: lines[0]}
	if c.Origin == "" {
		return Checkpoint{}, errors.New("parse checkpoint: empty origin")
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("parse checkpoint: bad size %q", lines[1])
	}
	if n > MaxTreeSize {
		return Checkpoint{}, fmt.Errorf("parse checkpoint: size %d over the limit %d", n, int64(MaxTreeSize))
	}
	c.Size = n
	h, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(h) != tlog.HashSize {
		return Checkpoint{}, fmt.Errorf("parse checkpoint: bad root hash %q", lines[2])
	}
	copy(c.Root[:], h)
	return c, nil
}

// checkpointFile is a checkpoint the log issued, as kept in its directory.
type checkpointFile struct {
	Checkpoint
	Seq  int64 // issue order, from 1
	Note []byte
}

func checkpointName(seq int64) string { return fmt.Sprintf("%020d", seq) }

// listCheckpoints returns the sequence numbers of the issued checkpoints.
func listCheckpoints(dir string) ([]int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var seqs []int64
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		n, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil || checkpointName(n) != e.Name() {
			return nil, fmt.Errorf("unexpected checkpoint file %s", e.Name())
		}
		seqs = append(seqs, n)
	}
	return seqs, nil // os.ReadDir sorts by name, and names are zero-padded
}

// noteText returns the text of a signed note without verifying it.
func noteText(msg []byte) ([]byte, error) {
	_, err := note.Open(msg, note.VerifierList())
	var uv *note.UnverifiedNoteError
	if !errors.As(err, &uv) {
		return nil, fmt.Errorf("malformed note: %w", err)
	}
	return []byte(uv.Note.Text), nil
}

// latestCheckpoint returns the last checkpoint issued (unverified: it is the
// log's own), or a zero checkpointFile.
func latestCheckpoint(dir string) (checkpointFile, error) {
	seqs, err := listCheckpoints(dir)
	if err != nil || len(seqs) == 0 {
		return checkpointFile{}, err
	}
	return readCheckpointFile(dir, seqs[len(seqs)-1])
}

func readCheckpointFile(dir string, seq int64) (checkpointFile, error) {
	msg, err := readFileMax(filepath.Join(dir, checkpointName(seq)), MaxCheckpointSize)
	if err != nil {
		return checkpointFile{}, err
	}
	text, err := noteText(msg)
	if err != nil {
		return checkpointFile{}, fmt.Errorf("checkpoint %d: %w", seq, err)
	}
	c, err := ParseCheckpoint(text)
	if err != nil {
		return checkpointFile{}, fmt.Errorf("checkpoint %d: %w", seq, err)
	}
	return checkpointFile{Checkpoint: c, Seq: seq, Note: msg}, nil
}

// CheckpointOptions configure a Checkpointer. The zero value works.
type CheckpointOptions struct {
	// Logger receives Run's reports: signing failing, still failing
	// (every ReportEvery), resumed (default slog.Default()).
	Logger *slog.Logger
	// MaxBackoff caps the wait between Run's retries after a failure
	// (default 10s); ReportEvery is how often Run repeats that signing is
	// still failing (default 1m).
	MaxBackoff, ReportEvery time.Duration
	// TilesDir, if set, is kept up to date with a C2SP tlog-tiles view of
	// the log: checkpoint, tile/<L>/<N>[.p/<W>], tile/entries/<N>[.p/<W>].
	TilesDir string

	// Witnesses, if any, cosign every checkpoint before it is published
	// (C2SP tlog-witness): a checkpoint is kept, served and exported only
	// with the cosignatures of WitnessQuorum of them (0: all), and a
	// witness that has seen a larger or a different tree stops
	// publication for good (WitnessConflict).
	Witnesses     []CheckpointWitness
	WitnessQuorum int
	// WitnessTimeout bounds one round of requests to the witnesses
	// (default 10s).
	WitnessTimeout time.Duration
	// OnWitnessConflict, if set, is called once when a witness conflict
	// stops publication, to raise the alarm.
	OnWitnessConflict func(error)

	// Cosigners add their signatures to every checkpoint, after the
	// log's: the attested per-boot key (internal/attest). Their names
	// differ from the origin; a verifier that does not know them ignores
	// them (C2SP signed-note), and witnesses see the note with them.
	Cosigners []note.Signer
}

// Checkpointer signs checkpoints of a Log with a note.Signer whose name is
// the log's origin, and keeps every checkpoint it issued in the log's
// directory.
type Checkpointer struct {
	log    *Log
	signer note.Signer
	opts   CheckpointOptions

	run runState // Run's progress and failures (checkpointrun.go)

	signing  sync.Mutex // held by Checkpoint, which may wait on witnesses
	mu       sync.Mutex // guards last and wit.conflict
	last     checkpointFile
	exported int64 // tree size the tiles directory covers
	wit      witnessState
}

// NewCheckpointer returns a Checkpointer for l signing with s. It refuses a
// signer that is not the log's key (see RotateKey): the error wraps
// ErrWrongKey, often as a *KeyError naming both keys.
func NewCheckpointer(l *Log, s note.Signer, opts CheckpointOptions) (*Checkpointer, error) {
	return newCheckpointer(l, s, opts, nil)
}

func newCheckpointer(l *Log, s note.Signer, opts CheckpointOptions, pending *rotation) (*Checkpointer, error) {
	last, err := latestCheckpoint(filepath.Join(l.dir, checkpointDir))
	if err != nil {
		return nil, fmt.Errorf("new checkpointer: %w", err)
	}
	if last.Seq > 0 && last.Origin != s.Name() {
		return nil, fmt.Errorf("new checkpointer: signer %q, but the log's origin is %q: %w", s.Name(), last.Origin, ErrWrongKey)
	}
	for _, co := range opts.Cosigners {
		if co.Name() == s.Name() {
			return nil, fmt.Errorf("new checkpointer: cosigner named %q like the log's key", co.Name())
		}
	}
	if opts.WitnessQuorum < 0 || opts.WitnessQuorum > len(opts.Witnesses) {
		return nil, fmt.Errorf("new checkpointer: witness quorum %d of %d witnesses", opts.WitnessQuorum, len(opts.Witnesses))
	}
	seen := map[string]bool{}
	for _, w := range opts.Witnesses {
		if seen[w.Key.Name()] {
			return nil, fmt.Errorf("new checkpointer: witness %s listed twice", w.Key.Name())
		}
		seen[w.Key.Name()] = true
	}
	c := &Checkpointer{log: l, signer: s, opts: opts, last: last}
	if err := c.custody(s, pending); err != nil {
		return nil, fmt.Errorf("new checkpointer: %w", err)
	}
	c.initWitnesses()
	if opts.TilesDir != "" {
		if msg, err := os.ReadFile(filepath.Join(opts.TilesDir, "checkpoint")); err == nil {
			if text, err := noteText(msg); err == nil {
				if cp, err := ParseCheckpoint(text); err == nil && cp.Size <= l.Size() {
					c.exported = cp.Size
				}
			}
		}
	}
	return c, nil
}

// Checkpoint signs and stores a checkpoint over the current tree, unless the
// tree has not grown since the last one, and returns the signed note.
//
// With witnesses, the checkpoint is published (stored, exported, served)
// only once the quorum cosigned it, with their cosignatures appended.
func (c *Checkpointer) Checkpoint() ([]byte, error) {
	c.signing.Lock()
	defer c.signing.Unlock()
	if err := c.WitnessConflict(); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	size := c.log.Size()
	if last.Seq > 0 && size == last.Size {
		return last.Note, nil
	}
	// The stored hashes must be durable before a checkpoint vouches for
	// them: Open trusts the hashes a checkpoint covers.
	if err := c.log.hashes.sync(); err != nil {
		return nil, fmt.Errorf("checkpoint: sync hashes: %w", err)
	}
	root, err := tlog.TreeHash(size, c.log.hashes)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	cp := Checkpoint{Origin: c.signer.Name(), Size: size, Root: root}
	msg, err := note.Sign(&note.Note{Text: string(cp.Text())}, append([]note.Signer{c.signer}, c.opts.Cosigners...)...)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: sign: %w", err)
	}
	if len(c.opts.Witnesses) > 0 {
		if msg, err = c.cosign(cp, msg); err != nil {
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
	}
	seq := last.Seq + 1
	if err := fsx.WriteFileAtomic(filepath.Join(c.log.dir, checkpointDir, checkpointName(seq)), msg, 0o644); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	c.mu.Lock()
	c.last = checkpointFile{Checkpoint: cp, Seq: seq, Note: msg}
	c.mu.Unlock()
	if c.opts.TilesDir != "" {
		if err := c.log.exportTiles(c.opts.TilesDir, c.exported, size, msg); err != nil {
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
		c.exported = size
	}
	return msg, nil
}

// Latest returns the last signed checkpoint, or nil if none was issued.
func (c *Checkpointer) Latest() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last.Note
}

// Receipt returns a self-contained receipt for entry i against the last
// checkpoint, which must cover it (call Checkpoint first if needed).
func (c *Checkpointer) Receipt(i int64) ([]byte, error) {
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	if i < 0 || i >= last.Size {
		return nil, fmt.Errorf("receipt for entry %d: %w", i, ErrNotCovered)
	}
	entry, err := c.log.ReadEntry(i)
	if err != nil {
		return nil, fmt.Errorf("receipt: %w", err)
	}
	proof, err := tlog.ProveRecord(last.Size, i, c.log.hashes)
	if err != nil {
		return nil, fmt.Errorf("receipt for entry %d: %w", i, err)
	}
	return FormatReceipt(entry, i, proof, last.Note), nil
}

// ErrNotCovered is returned for an entry no signed checkpoint covers yet.
var ErrNotCovered = errors.New("entry not covered by a checkpoint yet")

// tileHeight is the C2SP tlog-tiles tile height: 256 hashes per tile.
const tileHeight = 8

// TilePath returns the C2SP tlog-tiles path of t: tile/<L>/<N>[.p/<W>], or
// tile/entries/<N>[.p/<W>] for the entry bundle of a level-0 tile (t.L == -1).
func TilePath(t tlog.Tile) string {
	p := t.Path() // tile/<H>/<L or data>/<N>[.p/<W>]
	p = strings.TrimPrefix(p, fmt.Sprintf("tile/%d/", t.H))
	p = strings.Replace(p, "data/", "entries/", 1)
	return "tile/" + p
}

// exportTiles writes the tiles and entry bundles that change when the tree
// grows from old to size, then the checkpoint. Once the checkpoint names
// the larger tree, it deletes the partial tiles and bundles of every tile
// this export completed, as C2SP tlog-tiles allows: a client of an older
// checkpoint reads the full tile's first hashes instead (tileFiles,
// readBundle). Without that the directory kept a partial tile per level
// and an entry bundle for every checkpoint, forever (several files a
// second at the default interval).
func (l *Log) exportTiles(dir string, old, size int64, checkpoint []byte) error {
	var completed []string // the .p directories of tiles now full
	write := func(t tlog.Tile, data []byte) error {
		path := filepath.Join(dir, TilePath(t))
		if t.W == 1<<tileHeight {
			completed = append(completed, path+".p")
		}
		return writeTileFile(path, data)
	}
	for _, t := range tlog.NewTiles(tileHeight, old, size) {
		data, err := tlog.ReadTileData(t, l.hashes)
		if err != nil {
			return fmt.Errorf("export tile %s: %w", TilePath(t), err)
		}
		if err := write(t, data); err != nil {
			return err
		}
		if t.L != 0 {
			continue
		}
		es, err := l.ReadEntries(t.N<<tileHeight, t.N<<tileHeight+int64(t.W))
		if err != nil {
			return fmt.Errorf("export entry bundle: %w", err)
		}
		n := 0
		for _, e := range es {
			n += 2 + len(e)
		}
		bundle := make([]byte, 0, n)
		for _, e := range es {
			bundle = binary.BigEndian.AppendUint16(bundle, uint16(len(e)))
			bundle = append(bundle, e...)
		}
		t.L = -1
		if err := write(t, bundle); err != nil {
			return err
		}
	}
	if err := writeTileFile(filepath.Join(dir, "checkpoint"), checkpoint); err != nil {
		return err
	}
	for _, p := range completed {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("export tiles: remove partial tiles: %w", err)
		}
	}
	return nil
}

func writeTileFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("export tiles: %w", err)
	}
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("export tiles: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("export tiles: %w", err)
	}
	return nil
}

// DirCheckpoints returns the signed checkpoint notes a log directory keeps,
// in the order they were issued, unverified (VerifyDir verifies them).
func DirCheckpoints(dir string) ([][]byte, error) {
	cdir := filepath.Join(dir, checkpointDir)
	seqs, err := listCheckpoints(cdir)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	out := make([][]byte, 0, len(seqs))
	for _, s := range seqs {
		b, err := readFileMax(filepath.Join(cdir, checkpointName(s)), MaxCheckpointSize)
		if err != nil {
			return nil, fmt.Errorf("checkpoint %d: %w", s, err)
		}
		out = append(out, b)
	}
	return out, nil
}
