package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/fsx"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/pglog"
	"github.com/rulelock/rulelock/internal/pgstate"
)

// The store: `rulelock serve --store postgres://...` (or store: in the
// config) keeps the audit log in PostgreSQL instead of <data_dir>/log, so
// that several replicas behind a load balancer append to one log (package
// pglog; docs/scale-out.md). Each replica records through a pglog.Log,
// rebuilds its state from the log at start, runs an integrator (one at a
// time integrates and signs, under an advisory lock) and a reconciler (it
// records unknown for requests whose replica vanished), and serves the
// log's routes from PostgreSQL. What stays on each replica's disk: the
// config, the log's signing key (<data_dir>/log.key, the same file on
// every replica, or a PKCS#11 token), log.pub and the archive of activated
// bundles (<data_dir>/bundles).

// defaultStoreLease is store_lease's default.
const defaultStoreLease = time.Minute

// minStoreLease is the shortest store_lease accepted.
const minStoreLease = 2 * time.Second

// store is the log in PostgreSQL, as one replica uses it.
type store struct {
	pool  *pgxpool.Pool
	log   *pglog.Log
	in    *pglog.Integrator
	rc    *pglog.Reconciler
	state *pgstate.State // the replicas' shared state: locks, the log read back (Recorder, LogReader)
	lease time.Duration
	stop  func() // set by run: stops the integrator, the reconciler and the listener, and waits
}

// Timings within a lease: a decision is recorded within a quarter of it
// (the log's append timeout), executed within half (the gateway's
// execution timeout), and its outcome recorded within the last quarter,
// so that a live replica has recorded its outcome before anyone may
// record unknown for it.
func (s *store) appendTimeout() time.Duration { return s.lease / 4 }
func (s *store) execTimeout() time.Duration   { return min(30*time.Second, s.lease/2) }

// checkStore refuses what store mode does not do (yet), before anything is
// opened, with what to do instead.
func checkStore(cfg *serveConfig) error {
	switch {
	case len(cfg.Log.Witnesses) > 0:
		return usageError("store: log.witnesses are not supported with a log in PostgreSQL yet: the integrator publishes checkpoints without cosignatures; remove log.witnesses, or use the embedded log (docs/scale-out.md)")
	case cfg.Export != nil:
		return usageError("store: export: is not supported with a log in PostgreSQL: export from one place instead, with `rulelock log export --store DSN` (docs/scale-out.md)")
	case cfg.Attestation != nil:
		return usageError("store: attestation is not supported with a log in PostgreSQL yet: each replica would need its own attested key and statements in the shared log (docs/scale-out.md)")
	case cfg.Console.enabled():
		return usageError("store: the console is not supported with a log in PostgreSQL yet (docs/scale-out.md)")
	case len(cfg.Agents) == 0:
		return usageError("store: list the agents in the config (agents: with token_sha256): replicas share no development token")
	case cfg.StoreLockConnections < 0 || cfg.StoreLockConnections > 1000:
		return usageError("store_lock_connections (%d): want 1 to 1000 (default 16)", cfg.StoreLockConnections)
	case cfg.StoreLease.Duration != 0 && cfg.StoreLease.Duration < minStoreLease:
		return usageError("store_lease (%s) must be at least %s", cfg.StoreLease.Duration, minStoreLease)
	}
	return nil
}

// openStore connects to PostgreSQL and opens the log; the integrator and
// the reconciler start with run.
func openStore(ctx context.Context, cfg *serveConfig) (*store, error) {
	s := &store{lease: cfg.StoreLease.Duration}
	if s.lease == 0 {
		s.lease = defaultStoreLease
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	if s.pool, err = pglog.Connect(octx, cfg.Store); err != nil {
		return nil, fmt.Errorf("store: %v", redactDSN(err, cfg.Store))
	}
	if s.log, err = pglog.Open(octx, s.pool, pglog.Options{Timeout: s.appendTimeout()}); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("store: %v", redactDSN(err, cfg.Store))
	}
	if s.state, err = pgstate.New(octx, s.pool, s.log, pgstate.Options{MaxHolders: int32(cfg.StoreLockConnections)}); err != nil {
		s.log.Close()
		s.pool.Close()
		return nil, fmt.Errorf("store: %v", redactDSN(err, cfg.Store))
	}
	s.rc = pglog.NewReconciler(s.log, s.lease, nil)
	return s, nil
}

// redactDSN keeps a DSN's password out of an error.
func redactDSN(err error, dsn string) string {
	msg := err.Error()
	if dsn != "" {
		msg = strings.ReplaceAll(msg, dsn, "(the store's DSN)")
	}
	return msg
}

// storeSigner opens the log's signing key for a replica: the PKCS#11 key,
// or <data_dir>/log.key, which must exist (every replica must sign with
// the same key: one is never made here), and refuses a key that did not
// sign the checkpoint the log in PostgreSQL has published.
func (g *running) storeSigner(ctx context.Context) error {
	cfg := g.cfg
	var err error
	if cfg.Log.Signer.PKCS11 != nil {
		if g.signer, err = openPKCS11(g.e, cfg, cfg.Log.Signer.PKCS11); err != nil {
			return err
		}
	} else {
		path := filepath.Join(cfg.DataDir, "log.key")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("store: %s is missing: every replica signs with the same key; create it once with `rulelock keygen --name %s --out %s` and copy it to every replica's data directory, or use log.signer.pkcs11 (docs/scale-out.md)", path, cfg.Origin, path)
		}
		if g.signer, err = audit.LoadKeyFile(path); err != nil {
			return err
		}
	}
	vk, ok := g.signer.(verifierKeyer)
	if !ok {
		return errors.New("log signing key: no verifier key")
	}
	v, err := note.NewVerifier(vk.VerifierKey())
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, err := pglog.NewReader(g.store.pool).Checkpoint(cctx)
	switch {
	case errors.Is(err, pglog.ErrNoCheckpoint):
	case err != nil:
		return fmt.Errorf("store: read the published checkpoint: %w", err)
	default:
		if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
			return fmt.Errorf("refusing to start: the log in PostgreSQL is signed by %v, not by this replica's key %s: give every replica the same log key (docs/scale-out.md)", noteSigners(msg), vkeyName(vk.VerifierKey()))
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "log.pub")); errors.Is(err, os.ErrNotExist) {
		return fsx.WriteFileAtomic(filepath.Join(cfg.DataDir, "log.pub"), []byte(vk.VerifierKey()+"\n"), 0o644)
	}
	return checkLogPub(g.e, cfg.DataDir, g.signer, true)
}

// storeIntegrator makes this replica's integrator.
func (g *running) storeIntegrator() error {
	cc, err := pgxpool.ParseConfig(g.cfg.Store)
	if err != nil {
		return fmt.Errorf("store: %v", redactDSN(err, g.cfg.Store))
	}
	g.store.in = pglog.NewIntegrator(cc.ConnConfig, g.signer, pglog.IntegratorOptions{Interval: g.cfg.CheckpointInterval.Duration,
		Logger: slog.New(slog.NewTextHandler(g.e.stderr, nil))})
	return nil
}

// run starts the integrator, the reconciler, which runs on the replica
// that integrates (any replica may: the log lets one outcome per request
// in), every checkpoint interval, and the listener that folds the other
// replicas' entries as they are announced (follow: the gateway's Follow).
func (s *store) run(e *env, interval time.Duration, follow func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.in.Run(ctx) })
	wg.Go(func() { s.state.Listen(ctx, follow) })
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if !s.in.Leading() {
				continue
			}
			n, err := s.rc.Step(ctx)
			if n > 0 {
				fmt.Fprintf(e.stderr, "rulelock: reconciler: %d allowed actions whose replica stopped before recording an outcome recorded as unknown, not re-executed\n", n)
			}
			if err != nil && ctx.Err() == nil {
				fmt.Fprintf(e.stderr, "rulelock: reconciler: %v\n", err)
			}
		}
	})
	s.stop = func() { cancel(); wg.Wait() }
}

func (s *store) close() error {
	if s.stop != nil {
		s.stop()
	}
	s.state.Close()
	err := s.log.Close()
	if s.stop != nil { // it ran: sign what it appended, unless another replica integrates
		if ferr := s.in.Flush(context.Background()); ferr != nil && err == nil {
			err = fmt.Errorf("final checkpoint: %w", ferr)
		}
	}
	s.pool.Close()
	return err
}

// In store mode the gateway records through the shared state, which
// appends to the log in PostgreSQL and reads it back (gateway.LogReader:
// the other replicas' entries, final requests, a new policy's indexes).
var (
	_ gateway.Recorder  = (*pgstate.State)(nil)
	_ gateway.LogReader = (*pgstate.State)(nil)
)

// In store mode the gateway's Ready reads checkpoint signing from this
// replica's integrator (gateway.Checkpoints): the age of the oldest entry
// no published checkpoint covers, whoever integrates.
var _ gateway.Checkpoints = (*pglog.Integrator)(nil)
