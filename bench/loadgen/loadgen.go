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
//
// The client (Client) is deliberately thin, so that the generator takes as
// little of the machine as it can from the server it shares it with, and
// adds as little as it can to the latencies it measures: each request is
// sent as ready-made HTTP/1.1 bytes (RawRequest) on a keep-alive
// connection from a pool, and the reply is read with net/http's own
// parser (http.ReadResponse). net/http's Transport costs several times as
// much CPU per request (goroutines and channels per connection, a request
// and header map built per call).
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Target is what a run sends.
type Target struct {
	// Request returns the i-th request as HTTP/1.1 bytes (RawRequest), i
	// counting from 0 over the whole run, warm-up included; the bytes are
	// only read.
	Request func(i int) []byte
	// Check judges a reply; nil accepts exactly status 200.
	Check func(status int, body []byte) error
}

// RawRequest returns req as HTTP/1.1 bytes, with its body, to send as is.
func RawRequest(req *http.Request) []byte {
	var b bytes.Buffer
	if err := req.Write(&b); err != nil {
		panic(fmt.Sprintf("loadgen: RawRequest: %v", err))
	}
	return b.Bytes()
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

// Client sends requests to one address over keep-alive HTTP/1.1
// connections: a request takes an idle connection or dials a new one, and
// gives it back once the reply's body is read (unless the reply closes
// it). It is safe for concurrent use.
type Client struct {
	addr    string
	timeout time.Duration

	mu    sync.Mutex
	idle  []*conn
	dials int
}

type conn struct {
	nc  net.Conn
	br  *bufio.Reader
	buf []byte // the last reply's body
}

// NewClient returns a client of the server at addr (host:port).
func NewClient(addr string) *Client {
	return &Client{addr: addr, timeout: 30 * time.Second}
}

// Dials returns the connections the client has opened.
func (c *Client) Dials() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dials
}

// Close closes the idle connections.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cn := range c.idle {
		cn.nc.Close()
	}
	c.idle = nil
}

func (c *Client) get(ctx context.Context) (*conn, error) {
	c.mu.Lock()
	if n := len(c.idle); n > 0 {
		cn := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return cn, nil
	}
	c.dials++
	c.mu.Unlock()
	nc, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	return &conn{nc: nc, br: bufio.NewReaderSize(nc, 16<<10)}, nil
}

func (c *Client) put(cn *conn) {
	c.mu.Lock()
	c.idle = append(c.idle, cn)
	c.mu.Unlock()
}

// exchange sends req on a connection and reads the whole reply. sent is
// when the request was handed to the kernel (after any dial); done, when
// the last byte of the body was read. body is valid until the connection
// is used again (give it back with put after using body).
func (c *Client) exchange(ctx context.Context, req []byte) (cn *conn, status int, body []byte, sent, done time.Time, err error) {
	cn, err = c.get(ctx)
	if err != nil {
		return nil, 0, nil, time.Time{}, time.Time{}, err
	}
	cn.nc.SetDeadline(time.Now().Add(c.timeout))
	sent = time.Now()
	if _, err = cn.nc.Write(req); err != nil {
		cn.nc.Close()
		return nil, 0, nil, sent, time.Time{}, err
	}
	resp, err := http.ReadResponse(cn.br, nil)
	if err != nil {
		cn.nc.Close()
		return nil, 0, nil, sent, time.Time{}, err
	}
	buf := bytes.NewBuffer(cn.buf[:0])
	_, err = buf.ReadFrom(resp.Body)
	done = time.Now()
	resp.Body.Close()
	cn.buf = buf.Bytes()
	if err != nil || resp.Close {
		cn.nc.Close()
		if err != nil {
			return nil, 0, nil, sent, done, err
		}
		return &conn{buf: cn.buf}, resp.StatusCode, cn.buf, sent, done, nil // not reusable
	}
	return cn, resp.StatusCode, cn.buf, sent, done, nil
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

// do sends request i and reads and checks the whole reply; sent and done
// are as in exchange (the check is not timed).
func do(ctx context.Context, c *Client, t Target, i int) (sent, done time.Time, err error) {
	cn, status, body, sent, done, err := c.exchange(ctx, t.Request(i))
	if err != nil {
		return sent, time.Now(), err
	}
	switch {
	case t.Check != nil:
		err = t.Check(status, body)
	case status != http.StatusOK:
		err = fmt.Errorf("status %d: %.200s", status, body)
	}
	if cn.nc != nil {
		c.put(cn)
	}
	return sent, done, err
}

// errInFlight is the error of a request that was not sent because
// maxInFlight requests were already waiting for their replies.
var errInFlight = errors.New("not sent: in-flight limit reached")

// OpenLoop sends rate requests per second for warmup+window, measures the
// requests scheduled within the window, and returns when every reply is in.
// At most maxInFlight requests wait for replies at once; a request due when
// that many are outstanding is not sent and counts as an error.
func OpenLoop(ctx context.Context, c *Client, t Target, rate int, warmup, window time.Duration, maxInFlight int) *Result {
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
	go func() { // the dispatcher
		defer close(dispatched)
		clk := newClock()
		defer clk.close()
		start := time.Now().Add(10 * time.Millisecond)
		for i := range nWarm + n {
			if ctx.Err() != nil {
				return
			}
			at := start.Add(time.Duration(int64(i) * int64(time.Second) / int64(rate)))
			clk.sleepUntil(at)
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
				sent, done, err := do(ctx, c, t, i)
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
			// Let the request goroutine run now, on this processor,
			// rather than after the dispatcher has armed its next wait.
			runtime.Gosched()
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
// replies that complete within the window. Client k sends requests k,
// k+clients, k+2·clients, … so that the clients together go through the
// target's requests in order (with requests spread over agents round
// robin, concurrent requests are from different agents).
func ClosedLoop(ctx context.Context, c *Client, t Target, clients int, warmup, window time.Duration) *Result {
	start := time.Now()
	from, until := start.Add(warmup), start.Add(warmup+window)
	lat := make([][]time.Duration, clients)
	sent := make([]int, clients)
	var total atomic.Int64
	var errs errSink
	var wg sync.WaitGroup
	for k := range clients {
		wg.Go(func() {
			for n := k; ctx.Err() == nil; n += clients {
				if !time.Now().Before(until) {
					return
				}
				s, e, err := do(ctx, c, t, n)
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
