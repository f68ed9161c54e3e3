package search

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/fsx"
)

var (
	agents    = []string{"agent-1", "agent-2", "agent-3", "agent-4", "dev-agent"}
	types     = []string{"transfer", "refund", "payments/lookup", "email"}
	decisions = []string{"allow", "deny", "require_approval", "approved"}
	rules     = []string{"NoHighValueTransfers", "DailyCap", "BusinessHours", "NoNewPayees"}
	base      = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
)

// genLog appends n random entries to l: decisions, approvals and outcomes
// of random requests, some with long actions (stored by digest) or sealed
// ones (commitments), at times that mostly advance and sometimes step back.
func genLog(t testing.TB, l *audit.Log, rnd *rand.Rand, n int, clock *time.Time) {
	t.Helper()
	var ps []audit.Pending
	for i := 0; i < n; i++ {
		*clock = clock.Add(time.Duration(rnd.IntN(2000)) * time.Millisecond)
		if rnd.IntN(200) == 0 {
			*clock = clock.Add(-time.Duration(rnd.IntN(120)) * time.Second) // the clock stepped back
		}
		req := fmt.Sprintf("req-%d", rnd.IntN(n/2+1))
		e := &audit.Entry{Time: *clock, Agent: agents[rnd.IntN(len(agents))], RequestID: req}
		switch rnd.IntN(4) {
		case 0:
			e.Kind, e.Decision, e.Approver = audit.KindApproval, "approve", "alice"
		case 1:
			e.Kind, e.Status, e.Closes = audit.KindOutcome, "ok", int64(rnd.IntN(i+1))
		case 2:
			e.Kind, e.Message, e.Agent, e.RequestID = audit.KindNote, "startup", "", ""
		default:
			e.Kind, e.Decision = audit.KindDecision, decisions[rnd.IntN(len(decisions))]
			action := fmt.Sprintf(`{"amount":%d,"type":%q}`, rnd.IntN(30000), types[rnd.IntN(len(types))])
			switch rnd.IntN(20) {
			case 0:
				action = fmt.Sprintf(`{"memo":%q,"type":%q}`, strings.Repeat("m", 5000), types[rnd.IntN(len(types))])
				e.Action = audit.Text(action)
			case 1:
				e.Action = audit.Sensitive(action)
			default:
				e.Action = audit.Text(action)
			}
			for k := rnd.IntN(3); k > 0; k-- {
				e.Rules = append(e.Rules, audit.Rule{Name: rules[rnd.IntN(len(rules))], Outcome: "deny"})
			}
		}
		p, err := l.Enqueue(context.Background(), e)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		if _, err := p.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// decoded is the whole log decoded by the oracle, independently of
// Match and ActionType: each entry and its action's type.
type decoded struct {
	entries []*audit.Entry
	types   []string
}

func decodeAll(t testing.TB, l *audit.Log) *decoded {
	t.Helper()
	raws, err := l.ReadEntries(0, l.Size())
	if err != nil {
		t.Fatal(err)
	}
	d := &decoded{}
	for _, raw := range raws {
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			t.Fatal(err)
		}
		typ := ""
		if text := e.Action.Text; text != "" || !e.Action.Digest.IsZero() {
			if text == "" {
				b, err := l.Blob(e.Action.Digest)
				if err != nil {
					t.Fatal(err)
				}
				text = string(b)
			}
			var a map[string]any
			json.Unmarshal([]byte(text), &a)
			typ, _ = a["type"].(string)
		}
		d.entries, d.types = append(d.entries, e), append(d.types, typ)
	}
	return d
}

// linear is the oracle: every entry matched by its own reading of the
// criteria.
func linear(d *decoded, q Query) []int64 {
	var out []int64
	for i, e := range d.entries {
		if int64(i) < q.From {
			continue
		}
		hasRule := q.Rule == ""
		for _, r := range e.Rules {
			hasRule = hasRule || r.Name == q.Rule
		}
		if (q.RequestID == "" || q.RequestID == e.RequestID) && (q.Agent == "" || q.Agent == e.Agent) &&
			(q.Type == "" || q.Type == d.types[i]) && (q.Decision == "" || q.Decision == e.Decision) &&
			(q.Kind == "" || q.Kind == e.Kind) && hasRule &&
			(q.Since.IsZero() || !e.Time.Before(q.Since)) && (q.Until.IsZero() || e.Time.Before(q.Until)) {
			out = append(out, int64(i))
			if q.Limit > 0 && len(out) == q.Limit {
				break
			}
		}
	}
	return out
}

func randomQuery(rnd *rand.Rand, n int64, clock time.Time) Query {
	pick := func(vals []string) string {
		switch rnd.IntN(6) {
		case 0:
			return vals[rnd.IntN(len(vals))]
		case 1:
			if rnd.IntN(4) == 0 {
				return "absent"
			}
		}
		return ""
	}
	var q Query
	q.Agent, q.Type, q.Decision, q.Rule = pick(agents), pick(types), pick(decisions), pick(rules)
	if rnd.IntN(5) == 0 {
		q.RequestID = fmt.Sprintf("req-%d", rnd.IntN(int(n)/2+2))
	}
	if rnd.IntN(6) == 0 {
		q.Kind = []audit.Kind{audit.KindDecision, audit.KindApproval, audit.KindOutcome, audit.KindNote}[rnd.IntN(4)]
	}
	span := max(clock.Sub(base), time.Second)
	if rnd.IntN(3) == 0 {
		q.Since = base.Add(time.Duration(rnd.Int64N(int64(span))))
	}
	if rnd.IntN(3) == 0 {
		q.Until = base.Add(time.Duration(rnd.Int64N(int64(span))))
		if rnd.IntN(2) == 0 && !q.Since.IsZero() {
			q.Until = q.Since.Add(time.Duration(rnd.IntN(600)) * time.Second)
		}
	}
	if rnd.IntN(4) == 0 {
		q.From = rnd.Int64N(n)
	}
	if rnd.IntN(3) == 0 {
		q.Limit = 1 + rnd.IntN(50)
	}
	return q
}

func indexes(rs []Result) []int64 {
	var out []int64
	for _, r := range rs {
		out = append(out, r.Index)
	}
	return out
}

func checkQueries(t *testing.T, ix *Index, l *audit.Log, rnd *rand.Rand, clock time.Time, n int) {
	t.Helper()
	checkQueriesOn(t, ix, l, l, rnd, clock, n)
}

// checkQueriesOn checks Find on src against a linear scan of l (the same
// log, read another way).
func checkQueriesOn(t *testing.T, ix *Index, src Source, l *audit.Log, rnd *rand.Rand, clock time.Time, n int) {
	t.Helper()
	nonEmpty := 0
	d := decodeAll(t, l)
	for k := 0; k < n; k++ {
		q := randomQuery(rnd, l.Size(), clock)
		got, err := ix.Find(src, q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		want := linear(d, q)
		if diff := cmp.Diff(want, indexes(got)); diff != "" {
			t.Fatalf("query %+v: found (-linear scan +index):\n%s", q, diff)
		}
		if len(want) > 0 {
			nonEmpty++
		}
	}
	if nonEmpty < n/4 {
		t.Fatalf("only %d of %d queries found anything: the test proves little", nonEmpty, n)
	}
}

func TestFindEqualsLinearScan(t *testing.T) {
	rnd := rand.New(rand.NewPCG(19, 5))
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	clock := base
	genLog(t, l, rnd, 12000, &clock)
	ix := &Index{dir: t.TempDir(), step: 5000} // three steps, blocks across them
	if n, err := ix.Update(context.Background(), l); err != nil || n != 12000 {
		t.Fatalf("Update: %d, %v", n, err)
	}
	checkQueries(t, ix, l, rnd, clock, 300)

	// Entries the index does not cover yet are scanned.
	genLog(t, l, rnd, 3000, &clock)
	checkQueries(t, ix, l, rnd, clock, 100)
	if n, err := ix.Update(context.Background(), l); err != nil || n != 15000 {
		t.Fatalf("Update: %d, %v", n, err)
	}
	checkQueries(t, ix, l, rnd, clock, 200)
}

// An update a crash cut short leaves records past meta's size: readers
// ignore them and the next update cuts them off.
func TestFindIgnoresInterruptedUpdate(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	clock := base
	genLog(t, l, rnd, 5000, &clock)
	ix := &Index{dir: t.TempDir()}
	if _, err := ix.Update(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	genLog(t, l, rnd, 2000, &clock)
	// What a crashed update could leave: records of entries 5000 and on
	// (here wrong ones) at the end of every posting file and bucket, and
	// times past the end.
	filepath.Walk(ix.dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || fi.Name() == metaFile || fi.Name() == lockFile {
			return err
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var b []byte
		for i := uint64(5000); i < 5100; i += 7 {
			if filepath.Base(filepath.Dir(p)) == reqDir {
				b = binary.LittleEndian.AppendUint64(b, 0)
			}
			b = binary.LittleEndian.AppendUint64(b, i)
		}
		_, err = f.Write(b)
		return err
	})
	checkQueries(t, ix, l, rnd, clock, 150)
	if n, err := ix.Update(context.Background(), l); err != nil || n != 7000 {
		t.Fatalf("Update: %d, %v", n, err)
	}
	checkQueries(t, ix, l, rnd, clock, 150)
}

// An index is never applied to another log: Find scans, Update rebuilds.
func TestIndexOfAnotherLog(t *testing.T) {
	rnd := rand.New(rand.NewPCG(8, 9))
	ixDir := t.TempDir()
	ix := &Index{dir: ixDir}
	a, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	clock := base
	genLog(t, a, rnd, 3000, &clock)
	if _, err := ix.Update(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	b, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	clock = base
	genLog(t, b, rnd, 4000, &clock)
	checkQueries(t, ix, b, rnd, clock, 100)
	if n, err := ix.Update(context.Background(), b); err != nil || n != 4000 {
		t.Fatalf("Update: %d, %v", n, err)
	}
	checkQueries(t, ix, b, rnd, clock, 100)
}

func TestUpdateBusy(t *testing.T) {
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ix := Open(t.TempDir())
	if _, err := ix.Update(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	// flock locks belong to an open file: a second open conflicts, even
	// in this process.
	lock, err := fsx.Lock(filepath.Join(ix.dir, lockFile))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := ix.Update(context.Background(), l); err != ErrBusy {
		t.Errorf("Update while locked: %v, want ErrBusy", err)
	}
	if !slices.Equal(fields, []string{"agent", "type", "decision", "rule", "kind"}) {
		t.Errorf("fields changed: %v (the layout in the package doc names them)", fields)
	}
}

// OpenLog reads what the index covers where the index recorded it and the
// rest from a tail: the same results as the whole log.
func TestOpenLogEqualsLinearScan(t *testing.T) {
	rnd := rand.New(rand.NewPCG(11, 12))
	logDir := t.TempDir()
	l, err := audit.Open(logDir, audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	clock := base
	genLog(t, l, rnd, 8000, &clock)
	ix := &Index{dir: t.TempDir(), step: 3000}
	if _, err := ix.Update(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	genLog(t, l, rnd, 2000, &clock)
	s, err := ix.OpenLog(logDir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.tail.First() != 7999 || s.Size() != 10000 {
		t.Fatalf("OpenLog: a tail from %d of %d entries, want from 7999 of 10000", s.tail.First(), s.Size())
	}
	checkQueriesOn(t, ix, s, l, rnd, clock, 150)
	if n, err := ix.Update(context.Background(), s); err != nil || n != 10000 {
		t.Fatalf("Update from the tail: %d, %v", n, err)
	}
	checkQueriesOn(t, ix, s, l, rnd, clock, 150)
	// Positions recorded from the tail are the log's.
	for _, i := range []int64{0, 7998, 7999, 9999} {
		got, err := s.Position(i)
		want, _ := l.Position(i)
		if err != nil || got != want {
			t.Errorf("position of %d: %+v, %v; want %+v", i, got, err, want)
		}
	}

	// An index of another log: OpenLog opens the whole log.
	other := Open(t.TempDir())
	o, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	genLog(t, o, rnd, 100, &clock)
	if _, err := other.Update(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	s2, err := other.OpenLog(logDir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.tail.First() != 0 || s2.Size() != 10000 {
		t.Errorf("another log's index: a view from %d of %d entries, want the whole log", s2.tail.First(), s2.Size())
	}
}
