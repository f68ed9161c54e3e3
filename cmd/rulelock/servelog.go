package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/rulelock/rulelock/internal/export"
	"github.com/rulelock/rulelock/internal/logstats"
	"github.com/rulelock/rulelock/internal/search"
)

// logServices read the gateway's own log beside the decision path: the
// counts behind the never-resetting /metrics counters, the search index
// behind GET /v1/log/find, and the exporter of the config's export: block.
// None of them is in the decision path: each reads what the log holds, and
// when one falls behind or stops, decisions go on.
type logServices struct {
	counts   *logstats.Counter
	src      logstats.Source  // the log counted: the embedded log, or in store mode the shared one
	index    *search.Index    // nil in store mode
	exporter *export.Exporter // nil without export:
	closeExp func()
	stop     func() // set by run
}

// indexInterval is how often the gateway brings the search index up to
// date (each update syncs the files it extends: a few hundred fsyncs at
// most, kept rare beside the log's own); a search scans what it does not
// cover yet.
const indexInterval = 30 * time.Second

// openLogServices prepares them and registers their metrics; a bad
// export: block refuses the start.
func (g *running) openLogServices() error {
	s := &logServices{counts: logstats.New(), src: g.log, index: search.Open(filepath.Join(g.cfg.DataDir, "index"))}
	logger := slog.New(slog.NewTextHandler(g.e.stderr, nil))
	g.metrics.Register(s.counts.Collector(g.log, func(err error) { logger.Error("log counts", "err", err) }))
	if c := g.cfg.Export; c != nil {
		x, closeSink, err := c.exporter(g.e.getenv, g.cfg.DataDir, export.Live(g.log), logger)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("invalid config: export: %v", err)}
		}
		s.exporter, s.closeExp = x, closeSink
		g.metrics.Register(x.Collector())
	}
	g.logsvc = s
	return nil
}

// openStoreLogServices prepares the counts of a replica in store mode: of
// the log in PostgreSQL, which every replica appends to (the whole log's
// counts, not this replica's). The search index and export: read the
// embedded log, and store mode refuses them.
func (g *running) openStoreLogServices() {
	s := &logServices{counts: logstats.New(), src: g.store.state}
	logger := slog.New(slog.NewTextHandler(g.e.stderr, nil))
	g.metrics.Register(s.counts.Collector(s.src, func(err error) { logger.Error("log counts", "err", err) }))
	g.logsvc = s
}

// run starts them; stop (g.logsvc.stop) ends them and waits.
func (s *logServices) run(e *env, g *running) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		// The counts at start: every entry of the log, once; scrapes then
		// count what was appended since.
		if err := s.counts.Update(ctx, s.src); err != nil && ctx.Err() == nil {
			fmt.Fprintf(e.stderr, "rulelock: counting the log for /metrics: %v\n", err)
		}
	})
	wg.Go(func() {
		if s.index == nil {
			return
		}
		t := time.NewTicker(indexInterval)
		defer t.Stop()
		for {
			if _, err := s.index.Update(ctx, g.log); err != nil && !errors.Is(err, search.ErrBusy) && ctx.Err() == nil {
				fmt.Fprintf(e.stderr, "rulelock: search index: %v (searches scan what it does not cover)\n", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	if s.exporter != nil {
		wg.Go(func() {
			if err := s.exporter.Run(ctx); err != nil {
				fmt.Fprintf(e.stderr, "rulelock: export stopped: %v; decisions go on, rulelock_export_lag_entries grows\n", err)
			}
		})
	}
	s.stop = func() {
		cancel()
		wg.Wait()
		if s.closeExp != nil {
			s.closeExp()
		}
	}
}
