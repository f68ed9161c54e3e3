package search

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/fsx"
)

// ErrBusy is returned by Update when another process is updating the
// index: Find still answers, scanning what the index does not cover.
var ErrBusy = errors.New("search index busy: another process is updating it")

const (
	metaFile   = "meta"
	timesFile  = "times"
	locsFile   = "positions"
	blocksFile = "blocks"
	termsDir   = "terms"
	reqDir     = "requests"
	lockFile   = "LOCK"
	blockSize  = 4096    // entries per time block
	buckets    = 256     // request id buckets
	chunkSize  = 1 << 18 // entries per update step (one sync of every file it touched; ~25 MB of memory)
)

// fields are the indexed fields with one posting list per value.
var fields = []string{"agent", "type", "decision", "rule", "kind"}

// Index is a search index in a directory. Find and Update may run in
// different processes at once; Update takes a lock.
type Index struct {
	dir  string
	step int64 // entries per update step (tests make it small)
}

// Open returns the index in dir (created by the first Update).
func Open(dir string) *Index { return &Index{dir: dir} }

// Dir returns the index's directory.
func (ix *Index) Dir() string { return ix.dir }

// version is the index layout's version: an index of another version is
// rebuilt.
const version = 2

type meta struct {
	V        int    `json:"v"`
	Size     int64  `json:"size"`
	LastLeaf string `json:"last_leaf,omitempty"`
}

func (ix *Index) readMeta() (meta, error) {
	b, err := os.ReadFile(filepath.Join(ix.dir, metaFile))
	if errors.Is(err, os.ErrNotExist) {
		return meta{V: version}, nil
	}
	if err != nil {
		return meta{}, fmt.Errorf("search index: %w", err)
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil || m.V < 1 || m.V > version || m.Size < 0 {
		return meta{}, fmt.Errorf("search index: %s is damaged; delete the directory %s to rebuild it", metaFile, ix.dir)
	}
	return m, nil
}

// covers returns how many of src's entries m covers: m.Size when src
// begins with the entries the index was built from, else 0 (another log:
// the index is not used, and the next Update rebuilds it).
func (m meta) covers(src Source) (int64, error) {
	if m.V != version || m.Size == 0 || m.Size > src.Size() {
		return 0, nil
	}
	e, err := src.ReadEntries(m.Size-1, m.Size)
	if err != nil {
		return 0, err
	}
	if tlog.RecordHash(e[0]).String() != m.LastLeaf {
		return 0, nil
	}
	return m.Size, nil
}

func termPath(dir, field, value string) string {
	h := sha256.Sum256([]byte(value))
	return filepath.Join(dir, termsDir, field, hex.EncodeToString(h[:16]))
}

// requestKey returns the bucket and key of a request id.
func requestKey(id string) (int, uint64) {
	h := sha256.Sum256([]byte(id))
	return int(h[0]), binary.LittleEndian.Uint64(h[8:16])
}

func bucketPath(dir string, b int) string {
	return filepath.Join(dir, reqDir, fmt.Sprintf("%02x", b))
}

// Update brings the index up to date with src and returns how many
// entries it covers. It rebuilds the index when src is not the log it was
// built from. It returns ErrBusy when another process holds the lock, and
// ctx's error when ctx ends first (what it indexed by then is kept).
func (ix *Index) Update(ctx context.Context, src Source) (int64, error) {
	dirs := []string{ix.dir, filepath.Join(ix.dir, reqDir)}
	for _, f := range fields {
		dirs = append(dirs, filepath.Join(ix.dir, termsDir, f))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return 0, fmt.Errorf("search index: %w", err)
		}
	}
	lock, err := fsx.Lock(filepath.Join(ix.dir, lockFile))
	if errors.Is(err, fsx.ErrLocked) {
		return 0, ErrBusy
	}
	if err != nil {
		return 0, fmt.Errorf("search index: %w", err)
	}
	defer lock.Close()
	m, err := ix.readMeta()
	if err != nil {
		return 0, err
	}
	size, err := m.covers(src)
	if err != nil {
		return 0, fmt.Errorf("search index: %w", err)
	}
	if size == 0 && m.Size > 0 {
		if err := ix.reset(dirs); err != nil {
			return 0, err
		}
	}
	for end := src.Size(); size < end; {
		next := min(end, size+ix.chunk())
		last, err := ix.add(ctx, src, size, next)
		if err != nil {
			return 0, fmt.Errorf("search index: %w", err)
		}
		for _, d := range dirs {
			if err := fsx.SyncDir(d); err != nil {
				return 0, fmt.Errorf("search index: %w", err)
			}
		}
		b, _ := json.Marshal(meta{V: version, Size: next, LastLeaf: last.String()})
		if err := fsx.WriteFileAtomic(filepath.Join(ix.dir, metaFile), b, 0o600); err != nil {
			return 0, fmt.Errorf("search index: %w", err)
		}
		size = next
	}
	return size, nil
}

// reset empties the index of another log.
func (ix *Index) reset(dirs []string) error {
	if err := os.Remove(filepath.Join(ix.dir, metaFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("search index: %w", err)
	}
	for _, d := range dirs[1:] {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("search index: %w", err)
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("search index: %w", err)
		}
	}
	for _, f := range []string{timesFile, blocksFile, locsFile} {
		if err := os.Remove(filepath.Join(ix.dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("search index: %w", err)
		}
	}
	return nil
}

// add indexes entries [lo, hi) and syncs every file it wrote; it returns
// the leaf hash of entry hi-1.
func (ix *Index) add(ctx context.Context, src Source, lo, hi int64) (tlog.Hash, error) {
	times := make([]int64, 0, hi-lo)
	locs := make([]byte, 0, (hi-lo)*16)
	post := map[string][]byte{}
	reqs := map[int][]byte{}
	var last tlog.Hash
	for i := lo; i < hi; i += 8192 {
		if err := ctx.Err(); err != nil {
			return last, err
		}
		raws, err := src.ReadEntries(i, min(hi, i+8192))
		if err != nil {
			return last, err
		}
		for j, raw := range raws {
			n := i + int64(j)
			e, typ, err := decode(src, raw)
			if err != nil {
				return last, fmt.Errorf("entry %d: %w", n, err)
			}
			last = tlog.RecordHash(raw)
			times = append(times, nanos(e.Time))
			pos, err := src.Position(n)
			if err != nil {
				return last, err
			}
			locs = binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(locs, uint64(pos.Segment)), uint64(pos.Offset))
			add := func(field, value string) {
				if value != "" {
					p := termPath(ix.dir, field, value)
					post[p] = binary.LittleEndian.AppendUint64(post[p], uint64(n))
				}
			}
			add("agent", e.Agent)
			add("type", typ)
			add("decision", e.Decision)
			add("kind", string(e.Kind))
			for k, r := range e.Rules {
				if !seenRule(e.Rules[:k], r.Name) {
					add("rule", r.Name)
				}
			}
			if e.RequestID != "" {
				b, key := requestKey(e.RequestID)
				reqs[b] = binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(reqs[b], key), uint64(n))
			}
		}
	}
	for p, b := range post {
		if err := appendRecords(p, b, 8, 0, lo); err != nil {
			return last, err
		}
	}
	for bk, b := range reqs {
		if err := appendRecords(bucketPath(ix.dir, bk), b, 16, 8, lo); err != nil {
			return last, err
		}
	}
	if err := writeAt(filepath.Join(ix.dir, locsFile), locs, lo*16); err != nil {
		return last, err
	}
	return last, ix.addTimes(lo, times)
}

// writeAt writes b at off of the file at path, cuts what follows, and
// syncs it.
func writeAt(path string, b []byte, off int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		return err
	}
	if err := f.Truncate(off + int64(len(b))); err != nil {
		return err
	}
	return fsx.Datasync(f)
}

func seenRule(rules []audit.Rule, name string) bool {
	for _, r := range rules {
		if r.Name == name {
			return true
		}
	}
	return false
}

// appendRecords appends records (of size rec, the index at offset at in
// each) to the file at path, first cutting off the records of entries at
// or past lo that an interrupted update left, then syncs it.
func appendRecords(path string, b []byte, rec, at int, lo int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	// The records are ascending: the first one at or past lo, by binary
	// search, is where the interrupted update's begin.
	n := st.Size() / int64(rec)
	var buf [16]byte
	var rerr error
	k := sort.Search(int(n), func(i int) bool {
		if _, err := f.ReadAt(buf[:rec], int64(i)*int64(rec)); err != nil {
			rerr = err
			return true
		}
		return int64(binary.LittleEndian.Uint64(buf[at:])) >= lo
	})
	if rerr != nil {
		return rerr
	}
	end := int64(k) * int64(rec)
	if _, err := f.WriteAt(b, end); err != nil {
		return err
	}
	if err := f.Truncate(end + int64(len(b))); err != nil {
		return err
	}
	return fsx.Datasync(f)
}

// addTimes writes the times of entries [lo, lo+len(times)) and the
// summaries of the blocks they fall in, and syncs both files.
func (ix *Index) addTimes(lo int64, times []int64) error {
	tf, err := os.OpenFile(filepath.Join(ix.dir, timesFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer tf.Close()
	// The block lo falls in begins before lo: its earlier times from the file.
	first := lo / blockSize * blockSize
	all := make([]byte, (lo-first)*8, (lo-first+int64(len(times)))*8)
	if _, err := tf.ReadAt(all, first*8); err != nil && !(errors.Is(err, io.EOF) && lo == first) {
		return fmt.Errorf("read times: %w", err)
	}
	for _, t := range times {
		all = binary.LittleEndian.AppendUint64(all, uint64(t))
	}
	if _, err := tf.WriteAt(all[(lo-first)*8:], lo*8); err != nil {
		return err
	}
	if err := tf.Truncate((lo + int64(len(times))) * 8); err != nil {
		return err
	}
	if err := fsx.Datasync(tf); err != nil {
		return err
	}
	var sums []byte
	for off := 0; off < len(all); off += blockSize * 8 {
		blk := all[off:min(len(all), off+blockSize*8)]
		lo, hi := int64(binary.LittleEndian.Uint64(blk)), int64(binary.LittleEndian.Uint64(blk))
		for k := 8; k < len(blk); k += 8 {
			t := int64(binary.LittleEndian.Uint64(blk[k:]))
			lo, hi = min(lo, t), max(hi, t)
		}
		sums = binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(sums, uint64(lo)), uint64(hi))
	}
	bf, err := os.OpenFile(filepath.Join(ix.dir, blocksFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer bf.Close()
	at := first / blockSize * 16
	if _, err := bf.WriteAt(sums, at); err != nil {
		return err
	}
	if err := bf.Truncate(at + int64(len(sums))); err != nil {
		return err
	}
	return fsx.Datasync(bf)
}

// Covers returns how many of src's entries the index covers: Find scans
// the others.
func (ix *Index) Covers(src Source) (int64, error) {
	m, err := ix.readMeta()
	if err != nil {
		return 0, err
	}
	return m.covers(src)
}

// Find returns the entries of src that match q, in log order, from
// q.From on, at most q.Limit of them. The index finds the candidates among
// the entries it covers, a scan the others; each one is read from src and
// matched there. Find does not update the index.
func (ix *Index) Find(src Source, q Query) ([]Result, error) {
	m, err := ix.readMeta()
	if err != nil {
		return nil, err
	}
	covered, err := m.covers(src)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	var out []Result
	if q.From < covered {
		if out, err = ix.find(src, &q, covered); err != nil {
			return nil, fmt.Errorf("search: %w", err)
		}
	}
	if q.Limit > 0 && len(out) >= q.Limit {
		return out, nil
	}
	out, err = Scan(src, &q, max(q.From, covered), src.Size(), q.Limit, out)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	return out, nil
}

// find intersects the lists of q's criteria over [q.From, end).
func (ix *Index) find(src Source, q *Query, end int64) ([]Result, error) {
	lists, closeAll, err := ix.lists(q, end)
	defer closeAll()
	if err != nil {
		return nil, err
	}
	var out []Result
	for x := max(q.From, 0); x < end; {
		agree := true
		for _, l := range lists {
			y, err := l.seek(x)
			if err != nil {
				return nil, err
			}
			if y != x {
				x, agree = y, false
				break
			}
		}
		if !agree {
			continue
		}
		r, ok, err := matchAt(src, q, x)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, r)
			if q.Limit > 0 && len(out) >= q.Limit {
				break
			}
		}
		x++
	}
	return out, nil
}

// matchAt reads entry x from the log and matches it.
func matchAt(src Source, q *Query, x int64) (Result, bool, error) {
	raws, err := src.ReadEntries(x, x+1)
	if err != nil {
		return Result{}, false, err
	}
	e, typ, err := decode(src, raws[0])
	if err != nil {
		return Result{}, false, fmt.Errorf("entry %d: %w", x, err)
	}
	if !Match(q, e, typ) {
		return Result{}, false, nil // a hash collision, or a record of another log
	}
	return Result{Index: x, LeafHash: tlog.RecordHash(raws[0]), Raw: raws[0], Entry: e}, true, nil
}

// lists opens the sorted lists of q's criteria, ending at end.
func (ix *Index) lists(q *Query, end int64) ([]list, func(), error) {
	var lists []list
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	if q.RequestID != "" {
		l, err := ix.requestList(q.RequestID, end)
		if err != nil {
			return nil, closeAll, err
		}
		lists = append(lists, l)
	}
	for _, c := range []struct{ field, value string }{{"agent", q.Agent}, {"type", q.Type}, {"decision", q.Decision}, {"rule", q.Rule}, {"kind", string(q.Kind)}} {
		if c.value == "" {
			continue
		}
		f, err := os.Open(termPath(ix.dir, c.field, c.value))
		if errors.Is(err, os.ErrNotExist) {
			lists = append(lists, sliceList{end: end}) // no entry has it
			continue
		}
		if err != nil {
			return nil, closeAll, err
		}
		files = append(files, f)
		l, err := newPostings(f, end)
		if err != nil {
			return nil, closeAll, err
		}
		lists = append(lists, l)
	}
	if !q.Since.IsZero() || !q.Until.IsZero() {
		f, err := os.Open(filepath.Join(ix.dir, timesFile))
		if err != nil {
			return nil, closeAll, err
		}
		files = append(files, f)
		l, err := newTimeList(f, filepath.Join(ix.dir, blocksFile), q.Since, q.Until, end)
		if err != nil {
			return nil, closeAll, err
		}
		lists = append(lists, l)
	}
	if len(lists) == 0 {
		lists = append(lists, allList{end: end})
	}
	return lists, closeAll, nil
}

// requestList reads the indexes of the entries whose request id hashes
// to id's key.
func (ix *Index) requestList(id string, end int64) (list, error) {
	bk, key := requestKey(id)
	b, err := os.ReadFile(bucketPath(ix.dir, bk))
	if errors.Is(err, os.ErrNotExist) {
		return sliceList{end: end}, nil
	}
	if err != nil {
		return nil, err
	}
	l := sliceList{end: end}
	for off := 0; off+16 <= len(b); off += 16 {
		i := int64(binary.LittleEndian.Uint64(b[off+8:]))
		if i >= end {
			break
		}
		if binary.LittleEndian.Uint64(b[off:]) == key {
			l.s = append(l.s, i)
		}
	}
	return l, nil
}

// nanos is t in Unix nanoseconds, clamped to what an int64 holds.
func nanos(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

var minTime, maxTime = time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64)

func (ix *Index) chunk() int64 {
	if ix.step > 0 {
		return ix.step
	}
	return chunkSize
}
