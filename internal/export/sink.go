package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// HTTP posts each batch to an endpoint. The zero Client is
// http.DefaultClient with Timeout bounding each attempt.
type HTTP struct {
	URL     string
	Header  http.Header   // added to each request (an Authorization header)
	Client  *http.Client  // default: a client with Timeout
	Timeout time.Duration // per attempt (default 30s)
}

// Send posts b; only a 2xx acknowledges it.
func (h *HTTP) Send(ctx context.Context, b Batch) error {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(b.Lines))
	if err != nil {
		return fmt.Errorf("post batch: %w", err)
	}
	for k, vs := range h.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Rulelock-First-Index", strconv.FormatInt(b.First, 10))
	req.Header.Set("Rulelock-Entries", strconv.Itoa(b.N))
	c := h.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("post batch: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusRequestEntityTooLarge:
		return fmt.Errorf("post batch: %s: %w", resp.Status, ErrTooLarge)
	}
	return fmt.Errorf("post batch: %s", resp.Status)
}

// File appends each batch to a file and fsyncs it before acknowledging.
type File struct {
	Path string

	mu sync.Mutex
	f  *os.File
}

// Send appends b to the file and syncs it.
func (s *File) Send(ctx context.Context, b Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		f, err := openAppend(s.Path)
		if err != nil {
			return err
		}
		s.f = f
	}
	if _, err := s.f.Write(b.Lines); err != nil {
		s.reset()
		return fmt.Errorf("append to %s: %w", s.Path, err)
	}
	if err := s.f.Sync(); err != nil {
		s.reset()
		return fmt.Errorf("sync %s: %w", s.Path, err)
	}
	return nil
}

// reset closes the file after a failed write, so that the next Send cuts a
// partial line and appends after the last complete one.
func (s *File) reset() {
	s.f.Close()
	s.f = nil
}

// Close closes the file.
func (s *File) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// openAppend opens path for appending, first cutting an incomplete last
// line (a batch a crash cut short: never acknowledged, so sent again).
func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	end, err := lastLineEnd(f)
	if err == nil {
		err = f.Truncate(end)
	}
	if err == nil {
		_, err = f.Seek(end, io.SeekStart)
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return f, nil
}

// lastLineEnd returns the offset just after the last '\n' of f (0 if none).
func lastLineEnd(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	for end := st.Size(); end > 0; {
		n := min(int64(len(buf)), end)
		start := end - n
		if _, err := f.ReadAt(buf[:n], start); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	return 0, nil
}
