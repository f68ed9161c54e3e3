package audit

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Run signs a checkpoint every interval until ctx is done, and returns nil
// then; it never returns early. It also signs as soon as the log goes
// quiet: when entries no checkpoint covers have been followed by no new
// entry for a short while (a twentieth of the interval, between 5ms and
// 50ms), so that a log that stops growing is covered promptly rather than
// at the next tick. A failed attempt (a full disk, an
// unwritable checkpoints directory, a signer whose token went away) is
// retried with capped exponential backoff: interval, twice that, and so on
// up to CheckpointOptions.MaxBackoff. Run reports through
// CheckpointOptions.Logger when signing starts failing, every ReportEvery
// while it still fails, and when it resumes; Status and Unsigned tell the
// rest of the program, so that it can stop acting on entries no signed
// checkpoint covers.
func (c *Checkpointer) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = time.Second
	}
	maxBackoff := c.opts.MaxBackoff
	if maxBackoff <= 0 {
		maxBackoff = 10 * time.Second
	}
	maxBackoff = max(maxBackoff, interval)
	c.run.start(c.Latest() != nil, c.signedSize(), time.Now())
	stop := make(chan struct{})
	defer close(stop)
	go c.watch(stop)
	wait := interval
	t := time.NewTimer(wait)
	defer t.Stop()
	quiet := time.NewTicker(quietTick(interval))
	defer quiet.Stop()
	seen := c.log.Size()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-quiet.C:
			size := c.log.Size()
			grew := size != seen
			seen = size
			// Only a quiet log that is ahead of its last checkpoint, and
			// never while retrying with backoff.
			if grew || size <= c.signedSize() || c.Status().Failed > 0 {
				continue
			}
		case <-t.C:
		}
		if err := c.attempt(); err != nil {
			wait = min(wait*2, maxBackoff)
		} else {
			wait = interval
		}
		t.Reset(wait)
	}
}

// quietTick is how often Run looks for a log that stopped growing: a
// twentieth of the interval, between 5ms and 50ms.
func quietTick(interval time.Duration) time.Duration {
	return min(max(interval/20, 5*time.Millisecond), 50*time.Millisecond)
}

// signedSize is the tree size of the last checkpoint issued.
func (c *Checkpointer) signedSize() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last.Size
}

// attempt signs one checkpoint and records and reports how it went.
func (c *Checkpointer) attempt() error {
	start := time.Now()
	size := c.log.Size() // every entry appended before start is in it
	c.run.busy(start)
	_, err := c.Checkpoint()
	c.run.busy(time.Time{})
	ch, before := c.run.attempted(start, size, err)
	c.report(ch, before, err)
	return err
}

// watch reports an attempt that has not returned for ReportEvery, and
// again every ReportEvery while it has not, until stop is closed: a signer
// that hangs (an HSM whose token went away mid-operation) is as loud as
// one that fails.
func (c *Checkpointer) watch(stop <-chan struct{}) {
	every := c.reportEvery()
	t := time.NewTicker(every / 4)
	defer t.Stop()
	var reported time.Time
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		since := c.run.busySince()
		if since.IsZero() || time.Since(since) < every || time.Since(reported) < every {
			continue
		}
		reported = time.Now()
		c.logger().Error("audit: checkpoint signing stuck: an attempt has not returned", slog.Duration("for", time.Since(since)),
			slog.Int64("log_size", c.log.Size()), slog.Duration("oldest_unsigned", c.Unsigned()))
	}
}

func (c *Checkpointer) logger() *slog.Logger {
	if c.opts.Logger != nil {
		return c.opts.Logger
	}
	return slog.Default()
}

func (c *Checkpointer) reportEvery() time.Duration {
	if c.opts.ReportEvery > 0 {
		return c.opts.ReportEvery
	}
	return time.Minute
}

// report logs a change of state, and a failure that has lasted another
// ReportEvery since it was last logged; before is the status before the
// attempt.
func (c *Checkpointer) report(ch change, before CheckpointStatus, err error) {
	lg, every := c.logger(), c.reportEvery()
	st := c.Status()
	switch {
	case ch == changeResumed:
		lg.Info("audit: checkpoint signing resumed", slog.Int64("size", st.Size),
			slog.Int64("failed_attempts", before.Failed), slog.Duration("failing_for", time.Since(before.FailingSince)))
	case ch == changeFailing:
		lg.Error("audit: checkpoint signing failed; retrying with backoff", slog.Any("error", err),
			slog.Int64("signed_size", st.Size), slog.Int64("log_size", c.log.Size()))
		c.run.reported(time.Now())
	case err != nil && time.Since(c.run.lastReport()) >= every:
		lg.Error("audit: checkpoint signing still failing", slog.Any("error", err),
			slog.Int64("failed_attempts", st.Failed), slog.Duration("failing_for", time.Since(st.FailingSince)),
			slog.Int64("signed_size", st.Size), slog.Int64("log_size", c.log.Size()),
			slog.Duration("oldest_unsigned", c.Unsigned()))
		c.run.reported(time.Now())
	}
}

// CheckpointStatus is what Run has done so far.
type CheckpointStatus struct {
	Running bool // Run has started
	// Size is the tree size the last successful attempt covered (at
	// least), and Covered when that attempt started: every entry appended
	// before Covered is in a signed checkpoint.
	Size    int64
	Covered time.Time
	// Signed reports whether any checkpoint was ever signed.
	Signed bool
	// Failures counts failed attempts since Run started; Failed the
	// consecutive ones (0 when the last attempt succeeded), since
	// FailingSince, the last with Err.
	Failures     int64
	Failed       int64
	FailingSince time.Time
	Err          error
}

// Status returns what Run has done so far. It does not wait for an
// attempt in progress (a signer that hangs does not hang Status).
func (c *Checkpointer) Status() CheckpointStatus {
	c.run.mu.Lock()
	defer c.run.mu.Unlock()
	return c.run.st
}

// Unsigned returns how long the oldest entry not covered by a signed
// checkpoint has been waiting, or 0 when every entry is covered or Run has
// not started. It is an upper bound: the entry was appended after the
// last successful attempt began, at most an interval (or a backoff) before
// it would have been signed. A caller that must not act on entries nobody
// can verify compares it with its limit (rulelock's log.max_unsigned).
func (c *Checkpointer) Unsigned() time.Duration {
	st := c.Status()
	if !st.Running || c.log.Size() <= st.Size {
		return 0
	}
	return time.Since(st.Covered)
}

// runState is Run's progress, under its own lock: Checkpoint holds c.mu
// while it signs.
type runState struct {
	mu       sync.Mutex
	st       CheckpointStatus
	reportAt time.Time // when a failure was last logged
	busyAt   time.Time // when the attempt in progress started, zero when none is
}

// change is what an attempt changed.
type change int

const (
	changeNone    change = iota
	changeFailing        // the first failure after a success (or the start)
	changeResumed        // the first success after failures
)

func (r *runState) start(signed bool, size int64, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Entries already in the log but in no checkpoint (written before a
	// restart) count as waiting from now: the first attempt signs them.
	r.st = CheckpointStatus{Running: true, Signed: signed, Size: size, Covered: now}
}

// attempted records an attempt that started at start, when the log had
// size entries, and returns what changed and the status before.
func (r *runState) attempted(start time.Time, size int64, err error) (change, CheckpointStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	before := r.st
	if err == nil {
		ch := changeNone
		if r.st.Failed > 0 {
			ch = changeResumed
		}
		r.st.Size, r.st.Covered, r.st.Signed = max(r.st.Size, size), start, true
		r.st.Failed, r.st.Err = 0, nil
		return ch, before
	}
	r.st.Failures++
	r.st.Failed++
	r.st.Err = err
	if r.st.Failed == 1 {
		r.st.FailingSince = start
		return changeFailing, before
	}
	return changeNone, before
}

func (r *runState) reported(t time.Time) {
	r.mu.Lock()
	r.reportAt = t
	r.mu.Unlock()
}

func (r *runState) lastReport() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reportAt
}

func (r *runState) busy(t time.Time) {
	r.mu.Lock()
	r.busyAt = t
	r.mu.Unlock()
}

func (r *runState) busySince() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.busyAt
}
