package approval

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rulelock/rulelock/policy"
)

// clocks is a wall clock that a test can set back and a monotonic clock
// that only moves forward, as a machine's are.
type clocks struct {
	wall clock
	mu   sync.Mutex
	mono time.Duration
}

func newClocks(t time.Time) *clocks { return &clocks{wall: clock{t: t}} }

func (c *clocks) elapsed() time.Duration { c.mu.Lock(); defer c.mu.Unlock(); return c.mono }

// pass lets d go by on both clocks.
func (c *clocks) pass(d time.Duration) {
	c.mu.Lock()
	c.mono += d
	c.mu.Unlock()
	c.wall.Set(c.wall.Now().Add(d))
}

// jump moves the wall clock alone, as an operator or NTP would.
func (c *clocks) jump(d time.Duration) { c.wall.Set(c.wall.Now().Add(d)) }

func (c *clocks) options(rec Recorder) Options {
	return Options{Now: c.wall.Now, Elapsed: c.elapsed, Recorder: rec}
}

// fourSeconds is a two-person rule with a 4 s window.
var fourSeconds = []policy.Requirement{{Rule: "Quick", Approvers: 2, Groups: []string{"treasury"}, Within: 4 * time.Second}}

// TestExpiryWallClockSetBack is the reported attack: the wall clock goes
// back an hour while a request is parked, and an approval 6 s after parking
// against a 4 s window was accepted. Expiry is judged on the monotonic
// clock too, so it is refused, the sweep ends the request, and the
// recorded expiry replays.
func TestExpiryWallClockSetBack(t *testing.T) {
	c := newClocks(t0)
	var log []Event
	rec := RecorderFunc(func(ev Event) error { log = append(log, ev); return nil })
	m := New(testRegistry(t), c.options(rec))
	r := mustPark(t, m, newRequest("req-1", fourSeconds...))

	c.pass(time.Second)
	c.jump(-time.Hour)
	c.pass(2 * time.Second)
	if _, err := m.Approve(r.ID, approve(t, "alice", r)); err != nil {
		t.Fatalf("approval 3 s in (wall clock an hour back): %v, want accepted", err)
	}
	c.pass(3 * time.Second) // 6 s after parking; the wall clock reads 59m54s before the expiry
	if _, err := m.Approve(r.ID, approve(t, "bob", r)); !errors.Is(err, ErrExpired) {
		t.Fatalf("approval 6 s in against a 4 s window: %v, want ErrExpired", err)
	}
	if next, ok := m.NextExpiry(); !ok || next.After(c.wall.Now()) {
		t.Errorf("NextExpiry = %v, %v; want due now (%v), not at the wall-clock expiry %v", next, ok, c.wall.Now(), r.Expires)
	}
	ended, err := m.Expire(c.wall.Now())
	if err != nil || len(ended) != 1 || ended[0].State != Expired {
		t.Fatalf("Expire with the wall clock set back: %+v, %v; want req-1 expired", ended, err)
	}
	last := log[len(log)-1]
	if last.Kind != EventExpired || !last.Time.Equal(r.Expires) {
		t.Errorf("recorded %s at %v, want expired at its expiry %v", last.Kind, last.Time, r.Expires)
	}
	// The recorded events replay to the same state.
	n := New(testRegistry(t), newClocks(t0.Add(time.Hour)).options(nil))
	if _, err := n.Restore(log); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if d := compareManagers(m, n); d != "" {
		t.Errorf("restored state differs (-live +restored):\n%s", d)
	}
}

// TestRestoreClockSetBack: across a restart the monotonic clock starts
// again, so what is left of a window comes from the wall clock, but never
// more than the log proves: the latest recorded time is a floor for "now",
// however far back the wall clock was set.
func TestRestoreClockSetBack(t *testing.T) {
	c := newClocks(t0)
	var log []Event
	rec := RecorderFunc(func(ev Event) error { log = append(log, ev); return nil })
	m := New(testRegistry(t), c.options(rec))
	quick := mustPark(t, m, newRequest("quick", fourSeconds...)) // expires at t0+4s
	c.pass(3 * time.Second)
	slow := mustPark(t, m, newRequest("slow")) // a 4 h window; recorded at t0+3s

	// Restart with the wall clock an hour back: by the wall clock, quick
	// would have an hour and 4 s left; the log proves 3 s have passed.
	r := newClocks(t0.Add(-time.Hour))
	m = New(testRegistry(t), r.options(rec))
	if _, err := m.Restore(log); err != nil {
		t.Fatal(err)
	}
	r.pass(500 * time.Millisecond)
	if _, err := m.Approve(quick.ID, approve(t, "alice", quick)); err != nil {
		t.Fatalf("approval within what is left of the window: %v", err)
	}
	r.pass(time.Second) // 4.5 s after parking, by the log
	if _, err := m.Approve(quick.ID, approve(t, "bob", quick)); !errors.Is(err, ErrExpired) {
		t.Fatalf("approval past the window after a restart with the clock set back: %v, want ErrExpired", err)
	}
	if ended, err := m.Expire(r.wall.Now()); err != nil || len(ended) != 1 || ended[0].ID != quick.ID {
		t.Fatalf("Expire: %+v, %v; want quick only", ended, err)
	}

	// The gateway also knows the latest time of any entry in its log: an
	// entry 4 h after slow was parked ends slow at once.
	m.NotBefore(slow.Expires)
	if _, err := m.Approve(slow.ID, approve(t, "alice", slow)); !errors.Is(err, ErrExpired) {
		t.Fatalf("approval after NotBefore(its expiry): %v, want ErrExpired", err)
	}
	// A floor earlier than what is known changes nothing.
	m.NotBefore(t0.Add(-48 * time.Hour))
	if ended, err := m.Expire(r.wall.Now()); err != nil || len(ended) != 1 || ended[0].ID != slow.ID {
		t.Fatalf("Expire: %+v, %v; want slow", ended, err)
	}
}
