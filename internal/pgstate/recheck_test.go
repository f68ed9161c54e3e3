package pgstate

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/policy"
)

// TestRecheckOnReplicas: a trade parked on replica 0 whose agent a reload
// removes is denied once when replicas 1 and 2 re-check their parked
// requests at the same moment (each under the request's lock, after
// reading the log); a waiter on replica 0 gets the denial, and an approval
// on replica 0 is refused: every replica folds the reload's denial.
func TestRecheckOnReplicas(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	req := c.park(t, c.reps[0], "agent-rv")
	waited := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		res, err := c.reps[0].gw.Wait(wctx, "agent-rv", req.ID)
		if err == nil && (res.Decision.Decision != policy.Deny || res.Decision.Reason != "principal_revoked") {
			err = errors.New("the waiter got " + string(res.Decision.Decision) + " " + res.Decision.Reason)
		}
		waited <- err
	}()
	const reload = "sha256:00000000000000000000000000000000000000000000000000000000000000bb"
	var mu sync.Mutex
	denied := 0
	var wg sync.WaitGroup
	for _, r := range c.reps[1:] {
		if err := r.gw.Follow(ctx); err != nil {
			t.Fatal(err)
		}
		r.gw.SetPrincipals(func(string) (policy.Agent, bool) { return policy.Agent{}, false })
		wg.Go(func() {
			got, err := r.gw.RecheckParked(ctx, reload)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			denied += len(got)
			mu.Unlock()
		})
	}
	wg.Wait()
	if denied != 1 {
		t.Errorf("the two replicas' re-checks denied %d times, want once", denied)
	}
	if err := <-waited; err != nil {
		t.Errorf("wait on replica 0: %v", err)
	}
	if _, err := c.reps[0].gw.Approve(ctx, "alice", req.ID, c.sign(t, "alice", req)); !errors.Is(err, approval.ErrClosed) {
		t.Errorf("approval on replica 0 of the denied request: %v, want closed", err)
	}
	if n := c.up.count(req.ID); n != 0 {
		t.Errorf("the upstream was called %d times", n)
	}
}
