// Package loadgen is the HTTP load generator of the gateway benchmarks
// (bench/gateway_test.go).
//
// OpenLoop sends requests on a fixed schedule (request i at start + i/rate),
// whether or not earlier replies have arrived, and measures each latency from
// the request's scheduled send time: a slow reply cannot delay the next
// requests and so hide its own cost (coordinated omission). ClosedLoop runs
// N clients that each send the next request as soon as the previous reply
// is in, and reports the completed requests per second: the maximum
// throughput at that concurrency.
//
// Both discard a warm-up period, and both are bounded in requests and time.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Target is what a run sends.
type Target struct {
	// New returns a new request. In OpenLoop i is the request's sequence
	// number (from 0, warm-up included); in ClosedLoop it is the client's
	// number (from 0).
	New func(i int) *http.Request
	// Check judges a reply; nil accepts exactly status 200.
	Check func(status int, body []byte) error
}

// Result is one run's measurements over its measured window (warm-up
// excluded).
type Result struct {
	Window time.Duration // the measured window
	Sent   int           // requests sent within the window
	Total  int           // replies received over the whole run, warm-up included
	OK     int           // replies that passed Check
	Errors int           // transport errors, failed checks, requests not sent (in-flight limit)
	Sample []string      // up to three distinct error messages

	// Latency of every OK reply, sorted. Open loop: from the scheduled send
	// time to the end of the reply's body. Closed loop: from the send.
	Latency []time.Duration
	// Open loop only: the same replies timed from the actual send (sorted),
	// and how late the sends were against the schedule (sorted).
	Service, Lag []time.Duration
}

// Quantile returns the q-quantile (0 ≤ q ≤ 1) of the sorted durations, 0
// when there are none (nearest rank).
func Quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(q*float64(len(d)) + 0.5)
	if i > 0 {
		i--
	}
	return d[min(i, len(d)-1)]
}

// Throughput returns the OK replies per second of the window.
func (r *Result) Throughput() float64 {
	return float64(r.OK) / r.Window.Seconds()
}

// NewClient returns an HTTP/1.1 client keeping up to conns idle keep-alive
// connections to each host, so that a run reuses its connections.
func NewClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
	}
}

// errors collects the error count and a few distinct messages.
type errSink struct {
	mu     sync.Mutex
	n      int
	sample []string
}

func (s *errSink) add(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	if m := err.Error(); len(s.sample) < 3 && !slices.Contains(s.sample, m) {
		s.sample = append(s.sample, m)
	}
}

// do sends one request and reads and checks the whole reply.
func do(ctx context.Context, c *http.Client, t Target, i int) error {
	req := t.New(i).WithContext(ctx)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if t.Check != nil {
		return t.Check(resp.StatusCode, body)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %.200s", resp.StatusCode, body)
	}
	return nil
}

// errInFlight is the error of a request that was not sent because
// maxInFlight requests were already waiting for their replies.
var errInFlight = errors.New("not sent: in-flight limit reached")

// OpenLoop sends rate requests per second for warmup+window, measures the
// requests scheduled within the window, and returns when every reply is in.
// At most maxInFlight requests wait for replies at once; a request due when
// that many are outstanding is not sent and counts as an error.
func OpenLoop(ctx context.Context, c *http.Client, t Target, rate int, warmup, window time.Duration, maxInFlight int) *Result {
	nWarm := int(warmup.Seconds() * float64(rate))
	n := int(window.Seconds() * float64(rate))
	type sample struct {
		ok             bool
		lat, svc, late time.Duration
	}
	samples := make([]sample, n) // each request writes only its own slot
	var errs errSink
	var inFlight atomic.Int64
	var total atomic.Int64
	notSent := 0
	var wg sync.WaitGroup
	dispatched := make(chan struct{})
	go func() { // the dispatcher, on its own thread (see precise)
		defer close(dispatched)
		precise()
		start := time.Now().Add(10 * time.Millisecond)
		for i := range nWarm + n {
			if ctx.Err() != nil {
				return
			}
			at := start.Add(time.Duration(int64(i) * int64(time.Second) / int64(rate)))
			sleepUntil(at)
			if inFlight.Add(1) > int64(maxInFlight) {
				inFlight.Add(-1)
				if i >= nWarm {
					notSent++
					errs.add(errInFlight)
				}
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer inFlight.Add(-1)
				sent := time.Now()
				err := do(ctx, c, t, i)
				done := time.Now()
				total.Add(1)
				if i < nWarm {
					return
				}
				if err != nil {
					errs.add(err)
					return
				}
				samples[i-nWarm] = sample{ok: true, lat: done.Sub(at), svc: done.Sub(sent), late: sent.Sub(at)}
			}()
		}
	}()
	<-dispatched
	wg.Wait()
	r := &Result{Window: window, Sent: n - notSent, Total: int(total.Load()), Errors: errs.n, Sample: errs.sample}
	for _, s := range samples {
		if s.ok {
			r.OK++
			r.Latency = append(r.Latency, s.lat)
			r.Service = append(r.Service, s.svc)
			r.Lag = append(r.Lag, s.late)
		}
	}
	slices.Sort(r.Latency)
	slices.Sort(r.Service)
	slices.Sort(r.Lag)
	return r
}

// ClosedLoop runs clients concurrent clients, each sending its next request
// as soon as it has the previous reply, for warmup+window, and measures the
// replies that complete within the window.
func ClosedLoop(ctx context.Context, c *http.Client, t Target, clients int, warmup, window time.Duration) *Result {
	start := time.Now()
	from, until := start.Add(warmup), start.Add(warmup+window)
	lat := make([][]time.Duration, clients)
	sent := make([]int, clients)
	var total atomic.Int64
	var errs errSink
	var wg sync.WaitGroup
	for k := range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				s := time.Now()
				if !s.Before(until) {
					return
				}
				err := do(ctx, c, t, k)
				e := time.Now()
				total.Add(1)
				if e.Before(from) || e.After(until) {
					continue
				}
				sent[k]++
				if err != nil {
					errs.add(err)
					continue
				}
				lat[k] = append(lat[k], e.Sub(s))
			}
		})
	}
	wg.Wait()
	r := &Result{Window: window, Total: int(total.Load()), Errors: errs.n, Sample: errs.sample}
	for k := range clients {
		r.Sent += sent[k]
		r.Latency = append(r.Latency, lat[k]...)
	}
	r.OK = len(r.Latency)
	slices.Sort(r.Latency)
	return r
}
