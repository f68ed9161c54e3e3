package main

import (
	"context"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/pglog"
	"github.com/rulelock/rulelock/internal/pgtest"
)

var storeCrashRuns = flag.Int("storecrash.runs", 30, "faults (a replica, the integrator or PostgreSQL killed) in TestServeStoreCrash")

// storeCrashLease is the replicas' store_lease: short, so that the test
// sees the unknowns recorded.
const storeCrashLease = 4 * time.Second

// TestServeStoreCrash runs three `rulelock serve --store` processes on one
// PostgreSQL under mixed traffic spread over them, and at random moments
// SIGKILLs one replica, the one that integrates, or PostgreSQL itself
// (every process of it), then restarts what it killed. At the end, with
// the leases expired, it checks against the log in PostgreSQL and an
// upstream that counts what it receives:
//
//   - every acknowledged decision and outcome is in the log, as replied;
//   - every request the upstream received has an allow decision in the
//     log, and reached it once (no upstream effect without a committed
//     allow, none twice);
//   - every allow decision has exactly one outcome; one whose replica was
//     killed, or whose outcome could not be recorded, is `unknown`;
//   - the exported log verifies, with --replay.
func TestServeStoreCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test in -short mode")
	}
	c := pgtest.New(t)
	up := &countingUpstream{keys: map[string]int{}}
	srv := httptest.NewServer(up)
	defer srv.Close()
	s := newStoreSetup(t, c.DSN(), srv.URL)
	var reps []*crashChain
	for n := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		r := &crashChain{t: t, n: n, url: "http://" + addr, token: s.token,
			cfg: s.replicaConfig(t, n, addr, fmt.Sprintf("store_lease: %s\n", storeCrashLease))}
		r.start(0)
		reps = append(reps, r)
	}
	for _, r := range reps {
		r.waitReady(0)
	}

	var acks []ack
	var stats struct{ replica, integrator, postgres int }
	var seq atomic.Int64
	runs := *storeCrashRuns
	for run := range runs {
		var stop atomic.Bool
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
				defer client.CloseIdleConnections()
				for !stop.Load() {
					r := reps[mrand.IntN(len(reps))]
					n := seq.Add(1)
					amount := 1 + mrand.IntN(1100) // over 1000: denied
					body := fmt.Sprintf(`{"action": {"type": "transfer", "amount": %d, "to": "acct-%d-%d"}}`, amount, w, n)
					a, ok, _ := r.send(client, run, body)
					if !ok {
						time.Sleep(5 * time.Millisecond) // killed, or refused during an outage: not acknowledged
						continue
					}
					mu.Lock()
					acks = append(acks, a)
					mu.Unlock()
				}
			})
		}
		time.Sleep(time.Duration(20+mrand.IntN(150)) * time.Millisecond)
		switch k := mrand.IntN(3); k {
		case 0, 1:
			victim := reps[mrand.IntN(len(reps))]
			if k == 1 { // the integrator, as its log says
				for _, r := range reps {
					if leads(r) {
						victim = r
					}
				}
				stats.integrator++
			} else {
				stats.replica++
			}
			victim.kill()
			time.Sleep(time.Duration(mrand.IntN(50)) * time.Millisecond)
			victim.start(run)
			stop.Store(true)
			wg.Wait()
			victim.waitReady(run)
		case 2:
			c.Kill()
			stats.postgres++
			time.Sleep(time.Duration(mrand.IntN(100)) * time.Millisecond)
			c.Start()
			stop.Store(true)
			wg.Wait()
			for _, r := range reps {
				r.waitReady(run)
			}
		}
	}

	// The leases of the decisions the faults left open expire; the
	// integrating replica's reconciler records them unknown.
	pool, err := pglog.Connect(context.Background(), c.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var v *storeView
	deadline := time.Now().Add(storeCrashLease + 20*time.Second)
	for {
		v = readStore(t, pool)
		if len(v.open()) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, r := range reps {
		r.child.cmd.Process.Signal(syscall.SIGTERM)
		<-r.child.done
		if r.child.err != nil {
			t.Errorf("replica %d: graceful stop: %v\n%s", r.n, r.child.err, r.child.tail())
		}
	}
	v = readStore(t, pool)

	allowed, unknown := 0, 0
	for _, a := range acks {
		ds := v.decisions[a.id]
		if len(ds) != 1 || ds[0] != a.index {
			t.Errorf("acknowledged request %s (HTTP %d, %s at entry %d): decision entries %v", a.id, a.httpStatus, a.decision, a.index, ds)
			continue
		}
		want := a.decision
		if a.httpStatus == 400 {
			want = "deny"
		}
		if got := v.entries[ds[0]].Decision; got != want {
			t.Errorf("request %s: replied %q, logged %q", a.id, want, got)
		}
		if a.outcome != "" {
			if outs := v.outcomes[a.id]; len(outs) != 1 || outs[0] != a.outIndex || v.entries[outs[0]].Status != a.outcome {
				t.Errorf("request %s: replied outcome %q at %d, logged %v", a.id, a.outcome, a.outIndex, outs)
			}
		}
	}
	calls := up.calls()
	for id, n := range calls {
		ds := v.decisions[id]
		if len(ds) != 1 || v.entries[ds[0]].Decision != "allow" {
			t.Errorf("MEDIATION: the upstream received request %s, whose decisions are %v", id, ds)
		}
		if n != 1 {
			t.Errorf("DUPLICATE EFFECT: request %s reached the upstream %d times", id, n)
		}
	}
	for id, ds := range v.decisions {
		if v.entries[ds[0]].Decision != "allow" {
			continue
		}
		allowed++
		outs := v.outcomes[id]
		if len(outs) != 1 {
			t.Errorf("allowed request %s (entry %d) has outcome entries %v, want exactly 1", id, ds[0], outs)
			continue
		}
		switch st := v.entries[outs[0]].Status; {
		case st == "unknown":
			unknown++
		case st == "ok" && calls[id] != 1:
			t.Errorf("request %s: outcome ok, but the upstream received it %d times", id, calls[id])
		}
	}
	t.Logf("%d runs (%d replicas, %d integrators, %d PostgreSQL killed): %d replies acknowledged, %d allowed, %d upstream calls, %d unknown",
		runs, stats.replica, stats.integrator, stats.postgres, len(acks), allowed, len(calls), unknown)
	if len(acks) == 0 || len(calls) == 0 {
		t.Fatal("nothing was acknowledged or executed: the test tested nothing")
	}

	dir := filepath.Join(t.TempDir(), "export")
	if out, code, stderr := cliCode(t, s.dir, "log", "export", "--store", c.DSN(), "--out", dir); code != 0 {
		t.Fatalf("log export: exit %d %s %s", code, out, stderr)
	}
	out, code, stderr := cliCode(t, s.dir, "verify", "--key", s.vkey, "--replay", "--allow-development",
		"--bundles", filepath.Join(s.dir, "replica-0", "bundles"), dir)
	if code != 0 || !strings.Contains(out, "0 findings, 0 allowed without an outcome") {
		t.Fatalf("verify --replay of the export: exit %d\n%s%s", code, out, stderr)
	}
}

// leads reports whether the replica's own log says it integrates now.
func leads(r *crashChain) bool {
	s := r.child.stderr.String() // read while it runs: a copy under the buffer's lock
	i := strings.LastIndex(s, "this replica is the integrator")
	return i >= 0 && !strings.Contains(s[i:], "no longer the integrator")
}

// storeView is the log in PostgreSQL read back.
type storeView struct {
	entries   []*audit.Entry
	decisions map[string][]int64
	outcomes  map[string][]int64
}

// open returns the allowed requests without an outcome.
func (v *storeView) open() []string {
	var ids []string
	for id, ds := range v.decisions {
		if v.entries[ds[0]].Decision == "allow" && len(v.outcomes[id]) == 0 {
			ids = append(ids, id)
		}
	}
	return ids
}

func readStore(t *testing.T, pool *pgxpool.Pool) *storeView {
	t.Helper()
	snap, err := pglog.NewReader(pool).Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	raws, err := snap.ReadEntries(0, snap.Size())
	if err != nil {
		t.Fatal(err)
	}
	v := &storeView{decisions: map[string][]int64{}, outcomes: map[string][]int64{}}
	for i, raw := range raws {
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		v.entries = append(v.entries, e)
		switch e.Kind {
		case audit.KindDecision:
			v.decisions[e.RequestID] = append(v.decisions[e.RequestID], int64(i))
		case audit.KindOutcome:
			v.outcomes[e.RequestID] = append(v.outcomes[e.RequestID], int64(i))
		}
	}
	return v
}
