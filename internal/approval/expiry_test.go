package approval

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// TestExpiry runs on synctest's fake clock: a request waits four hours,
// an approval in time counts, one at the deadline does not, the sweep
// ends the request and wakes its waiter.
func TestExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := New(testRegistry(t), Options{})
		r := mustPark(t, m, newRequest("req-1"))
		if want := time.Now().Add(4 * time.Hour).Truncate(time.Second); !r.Expires.Equal(want) {
			t.Fatalf("expires %v, want %v", r.Expires, want)
		}
		if next, ok := m.NextExpiry(); !ok || !next.Equal(r.Expires) {
			t.Fatalf("NextExpiry: %v, %v; want %v", next, ok, r.Expires)
		}
		waited := make(chan Request, 1)
		go func() {
			got, err := m.Wait(context.Background(), r.ID)
			if err != nil {
				t.Errorf("Wait: %v", err)
			}
			waited <- got
		}()

		time.Sleep(time.Hour)
		if _, err := m.Approve(r.ID, approve(t, "alice", r)); err != nil {
			t.Fatalf("approval after an hour: %v", err)
		}
		if ended, err := m.Expire(time.Now()); err != nil || len(ended) != 0 {
			t.Fatalf("Expire after an hour: %v, %v; want nothing", ended, err)
		}

		time.Sleep(3 * time.Hour) // now exactly at the expiry
		if _, err := m.Approve(r.ID, approve(t, "bob", r)); !errors.Is(err, ErrExpired) {
			t.Fatalf("approval at the expiry: %v, want ErrExpired", err)
		}
		synctest.Wait()
		select {
		case <-waited:
			t.Fatal("Wait returned before the sweep")
		default:
		}
		ended, err := m.Expire(time.Now())
		if err != nil || len(ended) != 1 || ended[0].ID != r.ID || ended[0].State != Expired {
			t.Fatalf("Expire at the expiry: %v, %v", ended, err)
		}
		got := <-waited
		if got.State != Expired || !got.Ended.Equal(r.Expires) || len(got.Approvals) != 1 {
			t.Errorf("waiter saw %s ended %v with %d approvals, want expired at %v with 1", got.State, got.Ended, len(got.Approvals), r.Expires)
		}
		if _, err := m.Approve(r.ID, approve(t, "bob", r)); !errors.Is(err, ErrClosed) {
			t.Errorf("approval after the sweep: %v, want ErrClosed", err)
		}
		if len(m.Pending("")) != 0 {
			t.Errorf("still pending after expiry")
		}
		if next, ok := m.NextExpiry(); ok {
			t.Errorf("NextExpiry with nothing pending: %v", next)
		}
	})
}

// TestWait checks that Wait wakes on the quorum and on a rejection, and
// gives up with the context.
func TestWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := New(testRegistry(t), Options{})
		a := mustPark(t, m, newRequest("req-a"))
		b := mustPark(t, m, newRequest("req-b"))
		c := mustPark(t, m, newRequest("req-c"))
		type waited struct {
			r   Request
			err error
		}
		wait := func(id string, d time.Duration) <-chan waited {
			ch := make(chan waited, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), d)
				defer cancel()
				r, err := m.Wait(ctx, id)
				ch <- waited{r, err}
			}()
			return ch
		}
		wa, wb, wc := wait(a.ID, time.Minute), wait(b.ID, time.Minute), wait(c.ID, 30*time.Second)
		time.Sleep(10 * time.Second)
		m.Approve(a.ID, approve(t, "alice", a))
		m.Approve(a.ID, approve(t, "bob", a))
		if _, err := m.Reject(b.ID, reject(t, "erin", b, "no")); err != nil {
			t.Fatal(err)
		}
		if got := <-wa; got.err != nil || got.r.State != Approved {
			t.Errorf("Wait(a): %s, %v; want approved", got.r.State, got.err)
		}
		if got := <-wb; got.err != nil || got.r.State != Rejected || got.r.Rejection.Reason != "no" {
			t.Errorf("Wait(b): %s, %v; want rejected", got.r.State, got.err)
		}
		got := <-wc
		if !errors.Is(got.err, context.DeadlineExceeded) || got.r.State != Pending {
			t.Errorf("Wait(c): %s, %v; want pending and the deadline", got.r.State, got.err)
		}
		if elapsed := time.Since(c.Created); elapsed != 30*time.Second {
			t.Errorf("Wait(c) gave up after %v, want 30s", elapsed)
		}
		if _, err := m.Wait(context.Background(), "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Wait(nope): %v, want ErrNotFound", err)
		}
	})
}
