package audit

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

var crashKills = flag.Int("crash.kills", 200, "SIGKILLs in TestCrash")

const crashDirEnv = "RULELOCK_AUDIT_CRASH_DIR"

// TestCrash kills a child process that appends in a loop with SIGKILL at
// random moments. After each kill the log reopens, holds every entry whose
// Append returned, and verifies.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test in -short mode")
	}
	s, v := testKey(t, testOrigin)
	var dir string
	acked := map[int64]tlog.Hash{}
	total := 0
	for kill := range *crashKills {
		if kill%10 == 0 {
			dir = t.TempDir()
			clear(acked)
		}
		crashOnce(t, dir, kill, acked)
		l, err := Open(dir, Options{SegmentSize: 256 << 10})
		if err != nil {
			t.Fatalf("kill %d: reopen: %v", kill, err)
		}
		var last []int64
		for i, h := range acked {
			b, err := l.ReadEntry(i)
			if err != nil || tlog.RecordHash(b) != h {
				t.Fatalf("kill %d: acknowledged entry %d lost or changed: %v", kill, i, err)
			}
			if len(last) < 5 {
				last = append(last, i)
			}
		}
		// The salts of acknowledged sensitive fields survived too.
		for _, i := range last {
			if _, err := l.Reveal(i, "instruction"); err != nil {
				t.Fatalf("kill %d: sensitive field of acknowledged entry %d: %v", kill, i, err)
			}
		}
		if kill%3 == 0 {
			cp, err := NewCheckpointer(l, s, CheckpointOptions{})
			if err == nil {
				_, err = cp.Checkpoint()
			}
			if err != nil {
				t.Fatalf("kill %d: checkpoint: %v", kill, err)
			}
		}
		size := l.Size()
		l.Close()
		if _, err := VerifyDir(dir, v, VerifyOptions{}); err != nil {
			t.Fatalf("kill %d: verify: %v", kill, err)
		}
		total += len(acked)
		if kill%10 == 9 {
			t.Logf("kills %d-%d: %d entries acknowledged, %d in the log", kill-9, kill, len(acked), size)
		}
	}
	if total == 0 {
		t.Fatal("no entry was ever acknowledged: the test tested nothing")
	}
}

// crashOnce runs one child and kills it, recording what it acknowledged.
func crashOnce(t *testing.T, dir string, kill int, acked map[int64]tlog.Hash) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("kill %d: child did not start: %q", kill, sc.Text())
	}
	go func() {
		time.Sleep(time.Duration(rand.IntN(20000)) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGKILL)
	}()
	for sc.Scan() {
		idx, hash, ok := strings.Cut(sc.Text(), " ")
		i, err := strconv.ParseInt(idx, 10, 64)
		h, herr := tlog.ParseHash(hash)
		if !ok || err != nil || herr != nil {
			continue // a line cut by the kill
		}
		acked[i] = h
	}
	cmd.Wait()
}

// TestCrashChild is the child of TestCrash: it appends until killed and
// prints "index leafhash" for each acknowledged entry.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("run by TestCrash")
	}
	l, err := Open(dir, Options{SegmentSize: 256 << 10})
	if err != nil {
		fmt.Fprintf(os.Stdout, "open: %v\n", err)
		os.Exit(1)
	}
	os.Stdout.WriteString("ready\n")
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				e := testEntry(w*1_000_000 + k)
				e.Reasoning = Text(strings.Repeat("r", rand.IntN(2000)))
				e.Instruction = Sensitive(fmt.Sprintf("pay %d", k))
				r, err := l.Append(context.Background(), e)
				if err != nil {
					fmt.Fprintf(os.Stderr, "append: %v\n", err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "%d %s\n", r.Index, r.LeafHash)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}
