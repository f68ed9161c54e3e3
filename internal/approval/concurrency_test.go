package approval

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rulelock/rulelock/policy"
)

// TestConcurrentFinalApprovals runs 1,000 trials. In each, a request
// needing three treasury members has one approval; then four more
// treasury members submit theirs at once, in half the trials together
// with a rejection. Exactly one approval may return Ready, and only when the
// request ends approved; every other submission is refused as closed.
// The recorded events replay to the same state.
func TestConcurrentFinalApprovals(t *testing.T) {
	trials := 1000
	if testing.Short() {
		trials = 100
	}
	three := []policy.Requirement{{Rule: "ThreeTreasury", Approvers: 3, Groups: []string{"treasury"}, Within: time.Hour}}
	last := []string{"carol", "erin", "frank", "bob"}
	var mu sync.Mutex
	var log []Event
	rec := RecorderFunc(func(ev Event) error { mu.Lock(); defer mu.Unlock(); log = append(log, ev); return nil })
	reg := testRegistry(t)
	m := New(reg, Options{Now: func() time.Time { return t0 }, Recorder: rec, MaxPendingPerAgent: 1, KeepClosed: trials})
	var approvedN, rejectedN int
	for trial := range trials {
		id := fmt.Sprintf("req-%d", trial)
		r := mustPark(t, m, newRequest(id, three...))
		if _, err := m.Approve(id, approve(t, "alice", r)); err != nil {
			t.Fatal(err)
		}
		withReject := trial%2 == 1
		notes := make([][]byte, len(last))
		for i, a := range last {
			notes[i] = approve(t, a, r)
		}
		var ready, accepted, refused, rejectedOK atomic.Int32
		var start, done sync.WaitGroup
		start.Add(1)
		submit := func(f func() (bool, error)) {
			done.Add(1)
			go func() {
				defer done.Done()
				start.Wait()
				isReady, err := f()
				switch {
				case err == nil && isReady:
					ready.Add(1)
				case err == nil:
					accepted.Add(1)
				case Code(err) == "closed":
					refused.Add(1)
				default:
					t.Errorf("%s: unexpected error %v", id, err)
				}
			}()
		}
		for _, n := range notes {
			submit(func() (bool, error) { res, err := m.Approve(id, n); return res.Ready, err })
		}
		if withReject {
			rn := reject(t, "erin", r, "stop")
			submit(func() (bool, error) {
				_, err := m.Reject(id, rn)
				if err == nil {
					rejectedOK.Add(1)
				}
				return false, err
			})
		}
		start.Done()
		done.Wait()
		got, err := m.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		submissions := int32(len(notes))
		if withReject {
			submissions++
		}
		if n := ready.Load() + accepted.Load() + refused.Load(); n != submissions {
			t.Fatalf("%s: %d submissions answered, want %d", id, n, submissions)
		}
		switch got.State {
		case Approved:
			approvedN++
			if ready.Load() != 1 || accepted.Load() != 1 || len(got.Approvals) != 3 {
				t.Fatalf("%s: approved with %d Ready results, %d other acceptances and %d approvals, want 1, 1 and 3",
					id, ready.Load(), accepted.Load(), len(got.Approvals))
			}
			if err := m.MarkExecuted(id); err != nil {
				t.Fatal(err)
			}
		case Rejected:
			rejectedN++
			if ready.Load() != 0 || rejectedOK.Load() != 1 {
				t.Fatalf("%s: rejected with %d Ready results and %d rejections, want 0 and 1", id, ready.Load(), rejectedOK.Load())
			}
		default:
			t.Fatalf("%s: state %s after the race", id, got.State)
		}
		if len(got.Approvals) > 3 {
			t.Fatalf("%s: %d approvals counted, want at most 3", id, len(got.Approvals))
		}
	}
	t.Logf("%d trials: %d approved, %d rejected", trials, approvedN, rejectedN)

	restored := New(reg, Options{KeepClosed: trials})
	if _, err := restored.Restore(log); err != nil {
		t.Fatal(err)
	}
	if diff := compareManagers(m, restored); diff != "" {
		t.Errorf("restored state differs (-before +after):\n%s", diff)
	}
}
