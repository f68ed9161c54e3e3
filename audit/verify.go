package audit

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Class is the class of a verification failure.
type Class string

// The failure classes.
const (
	BadSignature  Class = "bad_signature"  // a checkpoint's signature is invalid, or it is not a checkpoint of this log
	UnknownKey    Class = "unknown_key"    // a checkpoint is signed only by keys the verifier does not know
	Rollback      Class = "rollback"       // the log is smaller than a checkpoint seen before it
	Inconsistent  Class = "inconsistent"   // the entries do not hash to a signed root, or two checkpoints fork
	ModifiedEntry Class = "modified_entry" // an entry or its frame was altered
	MissingEntry  Class = "missing_entry"  // an entry is missing from the sequence
	Reordered     Class = "reordered"      // entries are out of order
	Truncated     Class = "truncated"      // a checkpoint covers entries the log no longer has
	BadProof      Class = "bad_proof"      // an inclusion or consistency proof does not check
	Equivocation  Class = "equivocation"   // the log signed two checkpoints that do not fit: VerifyError.Notes holds both
	Unwitnessed   Class = "unwitnessed"    // a checkpoint lacks the cosignatures the witness policy requires
)

// VerifyError is the first failure a verification found.
type VerifyError struct {
	Class  Class
	Index  int64  // the entry (or tree size) concerned, -1 if none
	File   string // the file the failure was found in, if any
	Offset int64  // the offset in File, if meaningful
	Err    error
	// Notes, for an Equivocation, are the two signed checkpoint notes
	// that prove it: each verifies under the log's key, and they cannot
	// both describe one append-only log.
	Notes [][]byte
}

func (e *VerifyError) Error() string {
	var b bytes.Buffer
	b.WriteString(string(e.Class))
	if e.Index >= 0 {
		fmt.Fprintf(&b, " at entry %d", e.Index)
	}
	switch {
	case strings.HasPrefix(e.File, segDir+"/"):
		fmt.Fprintf(&b, " (%s offset %d)", e.File, e.Offset)
	case e.File != "":
		fmt.Fprintf(&b, " (%s)", e.File)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *VerifyError) Unwrap() error { return e.Err }

// VerifyOptions configure VerifyDir. The zero value works.
type VerifyOptions struct {
	// Since is a signed checkpoint the auditor saved earlier. The log must
	// extend it: not be smaller (rollback) nor disagree with it (fork).
	Since []byte
	// Witnesses, if set, is the witness policy the latest checkpoint's
	// cosignatures must meet.
	Witnesses *WitnessPolicy

	keep int64 // the entry whose payload to keep (for ProveDir)
}

// Report is the result of a successful verification.
type Report struct {
	Entries     int64     // entries in the log
	Checkpoints int       // checkpoints verified
	Size        int64     // tree size of the latest checkpoint
	Root        tlog.Hash // root hash of the latest checkpoint
	Uncovered   int64     // entries after the latest checkpoint (not yet signed)
	Latest      []byte    // the latest signed checkpoint
}

// dirLog is a log directory read without locking, for verification: the
// number of entries, the stored hashes, and the entries asked to be kept.
type dirLog struct {
	dir    string
	n      int64
	kept   map[int64][]byte
	hashes []tlog.Hash // stored hashes, tlog numbering
	// rotations are the log's key rotation entries, in order.
	rotations []rotation
}

func (d *dirLog) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(d.hashes)) {
			return nil, fmt.Errorf("hash %d not stored", x)
		}
		out[i] = d.hashes[x]
	}
	return out, nil
}

type scanned struct {
	frame
	file string
}

// scanSegment calls fn for each frame of a segment file, reading it in
// large windows and stopping at the end of its data. pos is the log
// position of its first frame, for errors.
func scanSegment(f *os.File, name string, pos int64, fn func(scanned) error) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("read log: %w", err)
	}
	// The payloads point into the windows, which are not reused: the
	// encoding checks read them later, on other goroutines.
	r := &windowReader{r: f, size: st.Size(), lend: true, fresh: true}
	for off := int64(0); ; pos++ {
		fr, err := readFrame(r, off, st.Size())
		if err == errEnd {
			return nil
		}
		var bad *badFrameError
		if errors.As(err, &bad) {
			return &VerifyError{Class: ModifiedEntry, Index: pos, File: name, Offset: off, Err: err}
		}
		if err != nil {
			return fmt.Errorf("read log: %w", err)
		}
		if err := fn(scanned{fr, name}); err != nil {
			return err
		}
		off += frameHeader + int64(len(fr.payload))
	}
}

// windowReader serves ReadAt from a 4 MiB window of the underlying file.
// With lend set it is a viewer: readFrame's payloads then point into the
// window and are valid only until the next read, or for good with fresh
// set (each window is then a new buffer).
type windowReader struct {
	r     io.ReaderAt
	size  int64
	off   int64
	buf   []byte
	lend  bool
	fresh bool
}

func (w *windowReader) view(off, n int64) ([]byte, bool) {
	if !w.lend || off < w.off || off+n > w.off+int64(len(w.buf)) {
		return nil, false
	}
	return w.buf[off-w.off : off-w.off+n], true
}

func (w *windowReader) ReadAt(p []byte, off int64) (int, error) {
	if off < w.off || off+int64(len(p)) > w.off+int64(len(w.buf)) {
		n := max(int64(4<<20), int64(len(p)))
		n = min(n, w.size-off)
		if n < int64(len(p)) {
			return 0, io.ErrUnexpectedEOF
		}
		if int64(cap(w.buf)) < n || w.fresh {
			w.buf = make([]byte, n)
		}
		w.buf = w.buf[:n]
		if _, err := w.r.ReadAt(w.buf, off); err != nil {
			return 0, err
		}
		w.off = off
	}
	return copy(p, w.buf[off-w.off:]), nil
}

// readLogDir reads and checks every frame of the log in dir in one
// streaming pass: checksums, sequence, hash chain and entry encoding. It
// keeps the stored hashes and the payload of entry keep (if >= 0).
func readLogDir(dir string, keep int64) (*dirLog, error) {
	firsts, err := listSegments(filepath.Join(dir, segDir))
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	r := &logReader{d: &dirLog{dir: dir, kept: map[int64][]byte{}}, keep: keep, checks: newEncodingChecks()}
	r.checks.blobs = dir // before the first submit: the workers read it after
	defer r.checks.wait()
	for _, first := range firsts {
		name := filepath.Join(segDir, segName(first))
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read log: %w", err)
		}
		r.segFirst, r.segStart = first, true
		err = scanSegment(f, name, r.d.n, r.frame)
		f.Close()
		if err == errFound {
			break
		}
		if err != nil {
			if r.seq != nil {
				return nil, r.seq // an earlier failure
			}
			if ferr := r.flush(); ferr != nil {
				return nil, ferr
			}
			return nil, err
		}
	}
	if r.seq != nil {
		return nil, r.seq
	}
	if err := r.flush(); err != nil {
		return nil, err
	}
	r.d.rotations = r.checks.rotations
	slices.SortFunc(r.d.rotations, func(a, b rotation) int { return cmp.Compare(a.Index, b.Index) })
	return r.d, nil
}

// errFound stops a scan once a missing entry was found further on.
var errFound = errors.New("found")

// logReader is the state of readLogDir's pass.
type logReader struct {
	d        *dirLog
	keep     int64
	chain    tlog.Hash
	pending  []scanned // frames not yet handed to checks
	checks   *encodingChecks
	seq      *VerifyError
	segFirst int64
	segStart bool
}

// frame checks the next frame. After a sequence failure at position p it
// only looks for entry p further on, to tell reordered from missing.
func (r *logReader) frame(f scanned) error {
	if r.seq != nil {
		if f.index == r.seq.Index {
			r.seq.Class = Reordered
			r.seq.Err = fmt.Errorf("entry %d found later, in %s at offset %d", f.index, f.file, f.off)
			return errFound
		}
		return nil
	}
	pos := r.d.n
	if f.index != pos {
		if err := r.flush(); err != nil {
			return err
		}
		r.seq = &VerifyError{Class: MissingEntry, Index: pos, File: f.file, Offset: f.off, Err: fmt.Errorf("frame holds entry %d", f.index)}
		return nil
	}
	if r.segStart && f.index != r.segFirst {
		return &VerifyError{Class: MissingEntry, Index: pos, File: f.file, Err: fmt.Errorf("segment named for entry %d starts with entry %d", r.segFirst, f.index)}
	}
	r.segStart = false
	leaf := tlog.RecordHash(f.payload)
	r.chain = nextChain(r.chain, leaf)
	if r.chain != f.chain {
		if err := r.flush(); err != nil {
			return err
		}
		return &VerifyError{Class: ModifiedEntry, Index: pos, File: f.file, Offset: f.off, Err: errors.New("hash chain broken")}
	}
	hs, err := tlog.StoredHashesForRecordHash(pos, leaf, r.d)
	if err != nil {
		return fmt.Errorf("read log: %w", err)
	}
	r.d.hashes = append(r.d.hashes, hs...)
	if pos == r.keep {
		r.d.kept[pos] = f.payload
	}
	r.d.n++
	if r.pending == nil {
		r.pending = make([]scanned, 0, checkChunk)
	}
	r.pending = append(r.pending, f)
	if len(r.pending) == checkChunk {
		r.submit()
	}
	return nil
}

// submit hands the pending frames to the encoding checks.
func (r *logReader) submit() {
	if len(r.pending) > 0 {
		r.checks.submit(r.pending)
		r.pending = nil
	}
}

// flush waits until every frame read so far has had its encoding checked
// and returns the first that is not canonical.
func (r *logReader) flush() error {
	r.submit()
	return r.checks.wait()
}

// checkChunk is how many frames go to an encoding check worker at once.
const checkChunk = 1024

// encodingChecks checks entry encodings on GOMAXPROCS goroutines while the
// log is read, and keeps the failure with the lowest index.
type encodingChecks struct {
	work  chan []scanned
	wg    sync.WaitGroup
	once  sync.Once
	mu    sync.Mutex
	first *VerifyError
	upto  atomic.Int64 // first.Index, for the workers to stop early
	// rotations are the key rotation entries checked, in no order.
	rotations []rotation
	blobs     string // the log directory whose blobs to check (checkBlobs), if any
}

func newEncodingChecks() *encodingChecks {
	c := &encodingChecks{work: make(chan []scanned, 2*runtime.GOMAXPROCS(0))}
	c.upto.Store(math.MaxInt64)
	for range runtime.GOMAXPROCS(0) {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			var chk entryChecker
			for frames := range c.work {
				c.check(&chk, frames)
			}
		}()
	}
	return c
}

func (c *encodingChecks) check(chk *entryChecker, frames []scanned) {
	for _, f := range frames {
		if f.index > c.upto.Load() {
			return // a failure before it was found
		}
		err := chk.check(f.payload)
		file, off := f.file, f.off
		if err == nil && c.blobs != "" {
			if err = checkBlobs(c.blobs, &chk.e); err != nil {
				file, off = err.(*blobError).path, 0
			}
		}
		if err != nil {
			c.mu.Lock()
			if c.first == nil || f.index < c.first.Index {
				c.first = &VerifyError{Class: ModifiedEntry, Index: f.index, File: file, Offset: off, Err: err}
				c.upto.Store(f.index)
			}
			c.mu.Unlock()
			return
		}
		if chk.e.Kind == KindKeyRotation {
			c.mu.Lock()
			c.rotations = append(c.rotations, rotation{Index: f.index, Old: strings.Clone(chk.e.OldKey), New: strings.Clone(chk.e.NewKey)})
			c.mu.Unlock()
		}
	}
}

func (c *encodingChecks) submit(frames []scanned) { c.work <- frames }

// wait waits for every submitted check and returns the first failure. No
// submit may follow it.
func (c *encodingChecks) wait() error {
	c.once.Do(func() {
		close(c.work)
		c.wg.Wait()
	})
	if c.first != nil {
		return c.first
	}
	return nil
}

// openCheckpoint verifies a signed checkpoint note and parses it. Its origin
// must be the key's name; it carries one signature per key at most
// (checkSignatureLines) and its size is at most MaxTreeSize.
// A nil key skips the signature (for tools that only read the log).
func openCheckpoint(msg []byte, key note.Verifier, where string) (Checkpoint, *VerifyError) {
	if err := checkSignatureLines(msg); err != nil {
		return Checkpoint{}, &VerifyError{Class: BadSignature, Index: -1, File: where, Err: err}
	}
	if key == nil {
		text, err := noteText(msg)
		if err == nil {
			var cp Checkpoint
			if cp, err = ParseCheckpoint(text); err == nil {
				return cp, nil
			}
		}
		return Checkpoint{}, &VerifyError{Class: BadSignature, Index: -1, File: where, Err: err}
	}
	n, err := note.Open(msg, note.VerifierList(key))
	if err != nil {
		class := BadSignature
		var uv *note.UnverifiedNoteError
		if errors.As(err, &uv) {
			class = UnknownKey
		}
		return Checkpoint{}, &VerifyError{Class: class, Index: -1, File: where, Err: err}
	}
	cp, err := ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, &VerifyError{Class: BadSignature, Index: -1, File: where, Err: err}
	}
	if cp.Origin != key.Name() {
		return Checkpoint{}, &VerifyError{Class: BadSignature, Index: -1, File: where, Err: fmt.Errorf("origin %q, want %q", cp.Origin, key.Name())}
	}
	return cp, nil
}

// VerifyDir verifies the log in dir with the log's public key: every frame,
// the hash chain, every entry's encoding, every checkpoint's signature, the
// tree against every checkpoint, consistency between successive checkpoints
// and, with opts.Since, that the log extends a checkpoint seen earlier. It
// returns the first failure as a *VerifyError. It reads the directory
// without locking it: verify a quiescent log or a copy.
func VerifyDir(dir string, key note.Verifier, opts VerifyOptions) (*Report, error) {
	rep, _, err := verifyDir(dir, key, opts)
	return rep, err
}

func verifyDir(dir string, key note.Verifier, opts VerifyOptions) (*Report, *dirLog, error) {
	d, err := readLogDir(dir, opts.keep)
	if err != nil {
		return nil, nil, err
	}
	n := d.n
	rep := &Report{Entries: n}
	seqs, err := listCheckpoints(filepath.Join(dir, checkpointDir))
	if err != nil {
		return nil, nil, fmt.Errorf("verify: %w", err)
	}
	open := func(msg []byte, where string) (Checkpoint, *VerifyError) { return openCheckpoint(msg, key, where) }
	openSince := open
	var chain *keyChain
	if key != nil {
		var verr *VerifyError
		if chain, verr = newKeyChain(key, d.rotations); verr != nil {
			return nil, nil, verr
		}
		open, openSince = chain.open, chain.openAny
	}
	var prev Checkpoint
	seen := map[int64]signedCheckpoint{} // a verified checkpoint of each size
	for _, seq := range seqs {
		name := filepath.Join(checkpointDir, checkpointName(seq))
		msg, err := readFileMax(filepath.Join(dir, name), MaxCheckpointSize)
		if errors.Is(err, errTooLarge) {
			return nil, nil, &VerifyError{Class: BadSignature, Index: -1, File: name, Err: err}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("verify: %w", err)
		}
		cp, verr := open(msg, name)
		if verr != nil {
			return nil, nil, verr
		}
		if verr := equivocation(seen, cp, msg, name); verr != nil {
			return nil, nil, verr
		}
		if verr := d.checkTree(cp, prev, name); verr != nil {
			return nil, nil, verr
		}
		seen[cp.Size] = signedCheckpoint{cp, msg}
		prev = cp
		rep.Checkpoints++
		rep.Size, rep.Root, rep.Latest = cp.Size, cp.Root, msg
	}
	if chain != nil {
		if verr := chain.check(rep.Checkpoints); verr != nil {
			return nil, nil, verr
		}
	}
	if opts.Since != nil {
		since, verr := openSince(opts.Since, "since")
		if verr != nil {
			return nil, nil, verr
		}
		if since.Size > rep.Size {
			return nil, nil, &VerifyError{Class: Rollback, Index: rep.Size, File: "since", Err: fmt.Errorf("latest checkpoint has size %d, the saved one %d", rep.Size, since.Size)}
		}
		if verr := equivocation(seen, since, opts.Since, "since"); verr != nil {
			return nil, nil, verr
		}
		if verr := d.checkSince(since, opts.Since, rep.Latest); verr != nil {
			return nil, nil, verr
		}
	}
	if opts.Witnesses != nil {
		if rep.Latest == nil {
			return nil, nil, &VerifyError{Class: Unwitnessed, Index: -1, Err: errors.New("the log has no checkpoint to check the witness quorum on")}
		}
		if err := opts.Witnesses.Check(rep.Latest, filepath.Join(checkpointDir, checkpointName(seqs[len(seqs)-1]))); err != nil {
			return nil, nil, err
		}
	}
	rep.Uncovered = n - rep.Size
	return rep, d, nil
}

// signedCheckpoint is a checkpoint and its verified note.
type signedCheckpoint struct {
	Checkpoint
	note []byte
}

// equivocation reports an Equivocation when the log signed another
// checkpoint of cp's size with a different root.
func equivocation(seen map[int64]signedCheckpoint, cp Checkpoint, msg []byte, where string) *VerifyError {
	other, ok := seen[cp.Size]
	if !ok || other.Root == cp.Root {
		return nil
	}
	return &VerifyError{Class: Equivocation, Index: cp.Size, File: where, Notes: [][]byte{other.note, msg},
		Err: fmt.Errorf("two signed checkpoints of size %d with different roots %v and %v", cp.Size, other.Root, cp.Root)}
}

// checkSince checks a checkpoint saved earlier against the log, whose
// latest checkpoint (latest, verified against the entries) covers it: a
// tree that does not match is a checkpoint the log cannot have signed
// honestly, and both notes prove it.
func (d *dirLog) checkSince(since Checkpoint, msg, latest []byte) *VerifyError {
	verr := d.checkTree(since, Checkpoint{}, "since")
	if verr == nil || verr.Class != Inconsistent || latest == nil {
		return verr
	}
	verr.Class, verr.Notes = Equivocation, [][]byte{msg, latest}
	verr.Err = fmt.Errorf("the saved checkpoint does not fit the log's latest one: %w", verr.Err)
	return verr
}

// checkTree checks that the log's tree matches cp and that cp extends prev.
func (d *dirLog) checkTree(cp, prev Checkpoint, where string) *VerifyError {
	n := d.n
	if cp.Size < prev.Size {
		return &VerifyError{Class: Rollback, Index: cp.Size, File: where, Err: fmt.Errorf("size %d after a checkpoint of size %d", cp.Size, prev.Size)}
	}
	if cp.Size > n {
		class := Truncated
		if where == "since" {
			class = Rollback
		}
		return &VerifyError{Class: class, Index: n, File: where, Err: fmt.Errorf("checkpoint covers %d entries, the log has %d", cp.Size, n)}
	}
	root, err := tlog.TreeHash(cp.Size, d)
	if err != nil {
		return &VerifyError{Class: Inconsistent, Index: cp.Size, File: where, Err: err}
	}
	if root != cp.Root {
		return &VerifyError{Class: Inconsistent, Index: cp.Size, File: where, Err: fmt.Errorf("entries hash to %v, checkpoint says %v", root, cp.Root)}
	}
	if prev.Size > 0 {
		p, err := tlog.ProveTree(cp.Size, prev.Size, d)
		if err == nil {
			err = tlog.CheckTree(p, cp.Size, cp.Root, prev.Size, prev.Root)
		}
		if err != nil {
			return &VerifyError{Class: Inconsistent, Index: prev.Size, File: where, Err: err}
		}
	}
	return nil
}

// ReadDirEntry returns entry i of the log in dir (checking the frames up to
// it but no signature).
func ReadDirEntry(dir string, i int64) ([]byte, error) {
	d, err := readLogDir(dir, i)
	if err != nil {
		return nil, err
	}
	if i < 0 || i >= d.n {
		return nil, fmt.Errorf("read entry %d: log has %d entries", i, d.n)
	}
	return d.kept[i], nil
}

// ProveDir verifies the log in dir and returns a receipt for entry i against
// its latest checkpoint. With a nil key the checkpoints' signatures are not
// checked (the receipt still is, by whoever verifies it).
func ProveDir(dir string, key note.Verifier, i int64) ([]byte, error) {
	rep, d, err := verifyDir(dir, key, VerifyOptions{keep: i})
	if err != nil {
		return nil, err
	}
	if i < 0 || i >= rep.Size {
		return nil, fmt.Errorf("prove entry %d: %w (latest checkpoint covers %d)", i, ErrNotCovered, rep.Size)
	}
	p, err := tlog.ProveRecord(rep.Size, i, d)
	if err != nil {
		return nil, fmt.Errorf("prove entry %d: %w", i, err)
	}
	return FormatReceipt(d.kept[i], i, p, rep.Latest), nil
}
