// Package search finds audit log entries by request id, agent, action
// type, decision, rule, kind and time range, with an index built from the
// log. The index is never the source of truth: every result is read back
// from the log and matched there (Match), the entries the index does not
// cover yet are matched by a scan, and the index can be deleted and
// rebuilt at any time.
//
// # Layout
//
// The index lives in its own directory (a gateway's DATA/index):
//
//	meta               {"v":2,"size":N,"last_leaf":"<base64>"}: the index covers entries [0, N);
//	                   last_leaf is entry N-1's leaf hash, so an index is never applied to another log
//	times              entry i's time, Unix nanoseconds, int64 little-endian at offset 8i
//	positions          where entry i's frame is (audit.Position): its segment's first index and
//	                   the offset, two int64 little-endian at offset 16i; OpenLog reads the
//	                   entries the index covers from there, and the rest from a tail of the log
//	blocks             per block of 4096 entries, the least and the greatest time (two int64)
//	terms/F/H          for a field F (agent, type, decision, rule, kind) and H, hex of the first
//	                   16 bytes of SHA-256(value): the indexes of the entries with that value,
//	                   ascending uint64 little-endian
//	requests/B         for the 256 buckets B (first byte) of SHA-256(request id): 16-byte
//	                   records (bytes 8 to 16 of the hash, index), ascending by index
//
// Every file is append-only. Update appends the entries from meta's size
// on, syncs the files, then replaces meta (write, fsync, rename): records
// at or past meta's size are from an update a crash cut short; readers
// ignore them and the next update cuts them off the files it extends. A
// query intersects the sorted lists (leapfrog: each list skips to the
// largest candidate so far, by binary search over the file), so it costs
// about the shortest list times a logarithm, whatever the log's size.
//
// Times need not be monotonic (clocks step back): a time range is a list
// too, which skips the blocks whose least and greatest times miss it.
package search

import (
	"encoding/json"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
)

// Source is what search reads of the log: an *audit.Log or an
// *audit.Snapshot.
type Source interface {
	Size() int64
	ReadEntries(lo, hi int64) ([][]byte, error)
	Blob(d audit.Digest) ([]byte, error)
	Position(i int64) (audit.Position, error)
}

// Query is an AND of criteria; the zero value of a criterion matches
// every entry.
type Query struct {
	RequestID string
	Agent     string
	Type      string // the action's type
	Decision  string // the entry's decision member (allow, deny, ...; approve, reject on approvals)
	Rule      string // the name of a matched rule
	Kind      audit.Kind
	Since     time.Time // entries at or after (zero: no bound)
	Until     time.Time // entries before (zero: no bound)

	From  int64 // only entries at or after this index
	Limit int   // at most this many results (0: no limit)
}

// Result is one entry found.
type Result struct {
	Index    int64
	LeafHash tlog.Hash
	Raw      []byte // the entry's encoding, as the log holds it
	Entry    *audit.Entry
}

// Match reports whether e (its action's type is typ) meets every
// criterion of q. It is the definition of a match: the index only finds
// candidates faster.
func Match(q *Query, e *audit.Entry, typ string) bool {
	switch {
	case q.RequestID != "" && e.RequestID != q.RequestID,
		q.Agent != "" && e.Agent != q.Agent,
		q.Type != "" && typ != q.Type,
		q.Decision != "" && e.Decision != q.Decision,
		q.Kind != "" && e.Kind != q.Kind,
		!q.Since.IsZero() && e.Time.Before(q.Since),
		!q.Until.IsZero() && !e.Time.Before(q.Until):
		return false
	}
	if q.Rule == "" {
		return true
	}
	for _, r := range e.Rules {
		if r.Name == q.Rule {
			return true
		}
	}
	return false
}

// ActionType returns the "type" member of e's action, reading an action
// stored by digest from the blob store; "" when there is none (no action,
// or one stored as a commitment).
func ActionType(src Source, e *audit.Entry) (string, error) {
	text := e.Action.Text
	if text == "" && !e.Action.Digest.IsZero() {
		b, err := src.Blob(e.Action.Digest)
		if err != nil {
			return "", err
		}
		text = string(b)
	}
	if text == "" {
		return "", nil
	}
	var a struct {
		Type json.RawMessage `json:"type"`
	}
	if err := json.Unmarshal([]byte(text), &a); err != nil {
		return "", nil // not an object: no type
	}
	var s string
	if json.Unmarshal(a.Type, &s) != nil {
		return "", nil // a sealed or non-string type: none to search by
	}
	return s, nil
}

// decode reads entry i's type and decodes it for matching.
func decode(src Source, raw []byte) (*audit.Entry, string, error) {
	e, err := audit.DecodeVerifiedEntry(raw)
	if err != nil {
		return nil, "", err
	}
	typ, err := ActionType(src, e)
	if err != nil {
		return nil, "", err
	}
	return e, typ, nil
}

// Scan finds the entries of [lo, hi) that match q by reading every one:
// what Find does past the index, and what a test checks Find against.
func Scan(src Source, q *Query, lo, hi int64, limit int, out []Result) ([]Result, error) {
	const chunk = 4096
	for ; lo < hi; lo += chunk {
		raws, err := src.ReadEntries(lo, min(hi, lo+chunk))
		if err != nil {
			return out, err
		}
		for j, raw := range raws {
			e, typ, err := decode(src, raw)
			if err != nil {
				return out, fmt.Errorf("entry %d: %w", lo+int64(j), err)
			}
			if Match(q, e, typ) {
				out = append(out, Result{Index: lo + int64(j), LeafHash: tlog.RecordHash(raw), Raw: raw, Entry: e})
				if limit > 0 && len(out) >= limit {
					return out, nil
				}
			}
		}
	}
	return out, nil
}
