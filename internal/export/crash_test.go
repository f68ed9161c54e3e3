package export_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/export"
)

// The crash test runs the exporter and the receiver as child processes:
// this test binary, re-executed with RULELOCK_EXPORT_CHILD set.
func TestMain(m *testing.M) {
	switch os.Getenv("RULELOCK_EXPORT_CHILD") {
	case "exporter":
		childExporter()
		return
	case "receiver":
		childReceiver()
		return
	}
	os.Exit(m.Run())
}

// childExporter exports the log another process writes (a snapshot per
// look) to the receiver, until it is killed.
func childExporter() {
	batch, _ := strconv.Atoi(os.Getenv("BATCH"))
	x, err := export.New(export.Options{
		Open: export.Follow(os.Getenv("LOGDIR")),
		Sink: &export.HTTP{URL: os.Getenv("URL"), Timeout: time.Second}, Cursor: os.Getenv("CURSOR"),
		BatchSize: batch, Poll: 2 * time.Millisecond, MinBackoff: 2 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
	})
	if err == nil {
		err = x.Run(context.Background())
	}
	fmt.Fprintln(os.Stderr, "exporter:", err)
	os.Exit(1)
}

// childReceiver keeps every line it acknowledges, durably (fsync before
// the 2xx), and checks each line's leaf hash before keeping it.
func childReceiver() {
	sink := &export.File{Path: os.Getenv("OUT")}
	ln, err := net.Listen("tcp", os.Getenv("ADDR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	err = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		first, _ := strconv.ParseInt(r.Header.Get("Rulelock-First-Index"), 10, 64)
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(nil, 1<<20)
		for i := first; sc.Scan(); i++ {
			var l export.Line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Index != i || l.Check() != nil {
				http.Error(w, fmt.Sprintf("bad line %d", i), 400)
				return
			}
		}
		if err := sink.Send(r.Context(), export.Batch{Lines: body}); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	fmt.Fprintln(os.Stderr, "receiver:", err)
	os.Exit(1)
}

// child is a running child process.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startChild(t *testing.T, role string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, "RULELOCK_EXPORT_CHILD="+role)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	if role == "receiver" {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "ready\n" {
			cmd.Process.Kill()
			t.Fatalf("receiver did not start: %q %v", line, err)
		}
	}
	go func() { io.Copy(io.Discard, out); cmd.Wait(); close(c.done) }()
	return c
}

func (c *child) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// TestExportSurvivesKills kills the exporter, the receiver or both with
// SIGKILL at random points, 30 times, while the log grows; then lets them
// catch up. Every entry must have arrived, in order (no index before all
// earlier ones), none missing, duplicates only of indexes already seen.
func TestExportSurvivesKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills 60+ processes")
	}
	dir := t.TempDir()
	logDir := filepath.Join(dir, "log")
	l, err := audit.Open(logDir, audit.Options{SegmentSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	out, cursor := filepath.Join(dir, "received.jsonl"), filepath.Join(dir, "cursor")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 7))
	startExporter := func() *child {
		return startChild(t, "exporter", "LOGDIR="+logDir, "CURSOR="+cursor, "URL=http://"+addr+"/", "BATCH="+strconv.Itoa(1+rnd.IntN(40)))
	}
	startReceiver := func() *child { return startChild(t, "receiver", "ADDR="+addr, "OUT="+out) }
	rcv, exp := startReceiver(), startExporter()
	defer func() { exp.kill(); rcv.kill() }()

	// The log grows the whole time, as a gateway's would.
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; !stop.Load(); n++ {
			e := &audit.Entry{Kind: audit.KindNote, Time: time.Now(), Message: fmt.Sprintf("note %d %s", n, bytes.Repeat([]byte("x"), n%300))}
			if _, err := l.Append(context.Background(), e); err != nil {
				t.Error(err)
				return
			}
			if n%8 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	const runs = 30
	for run := 0; run < runs; run++ {
		time.Sleep(time.Duration(5+rnd.IntN(80)) * time.Millisecond)
		switch rnd.IntN(3) {
		case 0:
			exp.kill()
			exp = startExporter()
		case 1:
			rcv.kill()
			rcv = startReceiver()
		default:
			exp.kill()
			rcv.kill()
			rcv, exp = startReceiver(), startExporter()
		}
	}
	stop.Store(true)
	wg.Wait()
	want := l.Size()
	waitFor(t, func() bool {
		c, err := export.ReadCursor(cursor)
		return err == nil && c.Next == want
	})
	exp.kill()
	rcv.kill()
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	dups := checkStream(t, data, want, l)
	t.Logf("%d kill runs: %d entries arrived, %d duplicate lines", runs, want, dups)
}
