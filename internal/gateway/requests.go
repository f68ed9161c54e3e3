package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/policy"
)

// requests is what the gateway remembers of the requests within the
// retention window, so that memory follows what the rules read, not what
// agents send: the whole record of a request only while it is not final
// (parked, awaiting its agent's report, being executed); of a final one,
// only where its entries are in the log (32 bytes), from which Get reads
// it back. A log that cannot be read back keeps whole records. g.mu guards
// it.
type requests struct {
	open  map[reqKey]*record
	done  map[reqKey]located
	order []retained // both, in the order they were decided
	// Requests past the retention window kept because they are parked;
	// expire looks at them again.
	lingering []reqKey
}

// reqKey is a request id in 16 bytes: the 128 bits of a gateway id, or the
// first 16 bytes of the SHA-256 of any other string.
type reqKey [16]byte

func keyOf(id string) reqKey {
	var k reqKey
	if len(id) == 27 && id[0] == 'r' {
		var src, back [26]byte
		copy(src[:], id[1:])
		if n, err := idEncoding.Decode(k[:], src[:]); err == nil && n == 16 {
			idEncoding.Encode(back[:], k[:])
			if back == src { // canonical: no two ids share a key
				return k
			}
		}
	}
	h := sha256.Sum256([]byte(id))
	copy(k[:], h[:])
	return k
}

// located is where a final request's entries are: its (last) decision and
// its outcome (-1 without one).
type located struct{ decision, outcome int64 }

type retained struct {
	t   int64 // the decision's time, Unix nanoseconds
	key reqKey
}

func newRequests() requests {
	return requests{open: map[reqKey]*record{}, done: map[reqKey]located{}}
}

// put remembers rec, a request just decided (or restored).
func (q *requests) put(rec *record) {
	k := keyOf(rec.ID)
	if _, ok := q.open[k]; !ok {
		if _, ok := q.done[k]; !ok {
			q.order = append(q.order, retained{rec.Time.UnixNano(), k})
		}
	}
	delete(q.done, k)
	q.open[k] = rec
}

// get returns the record of id, or where it is when it is final.
func (q *requests) get(id string) (*record, located, bool) {
	k := keyOf(id)
	if rec, ok := q.open[k]; ok && rec.ID == id {
		return rec, located{}, true
	}
	loc, ok := q.done[k]
	return nil, loc, ok
}

// settle keeps only where rec is once it is final (not parked, not
// awaiting a report) and its entries can be read back (readable).
func (q *requests) settle(rec *record, readable bool) {
	k := keyOf(rec.ID)
	if !readable || q.open[k] != rec || rec.parked() || rec.awaiting || rec.Decision == nil {
		return
	}
	loc := located{decision: rec.Entry.Index, outcome: -1}
	if rec.OutEntry != nil {
		loc.outcome = rec.OutEntry.Index
	}
	delete(q.open, k)
	q.done[k] = loc
}

// expire forgets the requests decided before cutoff, but those still
// parked, which linger until they are final.
func (q *requests) expire(cutoff time.Time) {
	c := cutoff.UnixNano()
	n := 0
	for n < len(q.order) && q.order[n].t < c {
		k := q.order[n].key
		if rec, ok := q.open[k]; ok && rec.parked() {
			q.lingering = append(q.lingering, k)
		} else {
			delete(q.open, k)
			delete(q.done, k)
		}
		n++
	}
	if n > 0 {
		q.order = q.order[n:]
	}
	if len(q.lingering) > 0 {
		keep := q.lingering[:0]
		for _, k := range q.lingering {
			if rec, ok := q.open[k]; ok && rec.parked() {
				keep = append(keep, k)
			} else {
				delete(q.open, k)
				delete(q.done, k)
			}
		}
		q.lingering = keep
	}
}

// readBack reads a final request of agent from the log: its decision, its
// outcome and their receipts, as Get returns them.
func readBack(lr LogReader, agent string, loc located) (*Result, error) {
	e, at, err := readEntry(lr, loc.decision)
	if err != nil {
		return nil, err
	}
	if e.Agent != agent {
		return nil, ErrForbidden
	}
	res := &Result{RequestID: e.RequestID, Decision: decisionOf(e), Receipt: receiptOf(at)}
	if loc.outcome < 0 {
		return res, nil
	}
	o, oat, err := readEntry(lr, loc.outcome)
	if err != nil {
		return nil, err
	}
	var out Outcome
	if err := json.Unmarshal([]byte(o.Result.Text), &out); err != nil {
		return nil, fmt.Errorf("read outcome %d: %w", loc.outcome, err)
	}
	r := receiptOf(oat)
	res.Outcome, res.OutcomeReceipt = &out, &r
	for _, v := range o.Postconditions {
		res.Postconditions = append(res.Postconditions, policy.Verdict{Rule: v.Rule, Holds: v.Holds, Message: v.Message, Shadow: v.Shadow, Error: v.Error})
	}
	return res, nil
}

func readEntry(lr LogReader, i int64) (*audit.Entry, audit.Receipt, error) {
	raws, err := lr.ReadEntries(i, i+1)
	if err != nil {
		return nil, audit.Receipt{}, fmt.Errorf("read entry %d: %w", i, err)
	}
	e, err := audit.DecodeEntry(raws[0])
	if err != nil {
		return nil, audit.Receipt{}, fmt.Errorf("read entry %d: %w", i, err)
	}
	return e, audit.Receipt{Index: i, LeafHash: tlog.RecordHash(raws[0])}, nil
}

// decisionOf is the decision a DECISION entry records.
func decisionOf(e *audit.Entry) *policy.Decision {
	d := &policy.Decision{Decision: policy.Effect(e.Decision), Reason: e.Message, Rules: []policy.FiredRule{}, Errors: []policy.RuleError{},
		ActionHash: "sha256:" + hex.EncodeToString(e.ActionSHA256[:]), Policy: e.BundleDigest}
	for _, r := range e.Rules {
		d.Rules = append(d.Rules, policy.FiredRule{Name: r.Name, Outcome: policy.Outcome(r.Outcome), Message: r.Message, Shadow: r.Shadow})
	}
	if d.Decision == policy.RequireApproval {
		if ds, err := ledger.DecodeDecisionState(e.State); err == nil && ds.Approval != nil {
			_, d.Approval, _ = ds.Approval.Terms()
		}
	}
	return d
}
