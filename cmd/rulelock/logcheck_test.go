package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"golang.org/x/mod/sumdb/note"
)

// noteLog writes n acknowledged note entries to data/log and returns the
// offset of each entry's frame in the first segment.
func noteLog(t *testing.T, data string, n int) []int64 {
	t.Helper()
	l, err := audit.Open(filepath.Join(data, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	off := int64(0)
	for i := range n {
		r, err := l.Append(context.Background(), &audit.Entry{Kind: audit.KindNote, Time: time.Unix(int64(i), 0), Message: fmt.Sprintf("note %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		b, err := l.ReadEntry(r.Index)
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
		off += 48 + int64(len(b)) // the frame header and the payload
	}
	offs = append(offs, off)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return offs
}

func patchFile(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}, args)
	return code, out.String(), errb.String()
}

const firstSeg = "log/00000000000000000000.seg"

// TestLogCheck: `rulelock log check` reports a healthy log (also while a
// gateway holds it), and a flipped byte in an acknowledged entry with its
// entry, segment and offset, exit status 1, in text and JSON; the gateway
// then refuses to start and points to it.
func TestLogCheck(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	offs := noteLog(t, data, 5)

	held, err := audit.Open(filepath.Join(data, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd(t, "log", "check", "--data", data)
	held.Close()
	if code != 0 || !strings.Contains(out, "5 entries in 1 segments") || !strings.Contains(out, "entries 0-4") || !strings.Contains(out, "ok: no damage") {
		t.Fatalf("check of a healthy log held open: exit %d\n%s%s", code, out, errs)
	}

	patchFile(t, filepath.Join(data, "log", firstSeg), offs[3]+48+5, []byte{'#'})
	code, out, _ = runCmd(t, "log", "check", "--data", data)
	want := fmt.Sprintf("DAMAGE: audit log corrupt at entry 3 (%s offset %d)", firstSeg, offs[3])
	if code != 1 || !strings.Contains(out, want) {
		t.Fatalf("check of a damaged log: exit %d, want 1 and %q in\n%s", code, want, out)
	}
	code, out, _ = runCmd(t, "log", "check", filepath.Join(data, "log"), "--json")
	var rep struct {
		OK      bool  `json:"ok"`
		Entries int64 `json:"entries"`
		Damage  struct {
			Code    string `json:"code"`
			Index   int64  `json:"index"`
			Segment string `json:"segment"`
			Offset  int64  `json:"offset"`
		} `json:"damage"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 {
		t.Fatalf("check --json: exit %d, %v\n%s", code, err, out)
	}
	if rep.OK || rep.Entries != 3 || rep.Damage.Code != "corrupt" || rep.Damage.Index != 3 || rep.Damage.Segment != firstSeg || rep.Damage.Offset != offs[3] {
		t.Fatalf("check --json: %+v", rep)
	}

	var stderr bytes.Buffer
	e := &env{stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
	g, err := startGateway(context.Background(), e, devConfig(data), false)
	if err == nil {
		g.close()
		t.Fatal("the gateway started on a damaged log")
	}
	var xe *exitError
	if !errors.As(err, &xe) || xe.code != 1 || !errors.Is(err, audit.ErrCorrupt) ||
		!strings.Contains(err.Error(), "entry 3") || !strings.Contains(err.Error(), "rulelock log check --data "+data) {
		t.Fatalf("start on a damaged log: %v", err)
	}
}

// TestServeReportsTornTail: the gateway starts on a log whose last write
// was cut short, and says on stderr what recovery zeroed; log check
// reported it first, as no damage.
func TestServeReportsTornTail(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	offs := noteLog(t, data, 5)
	// The first 20 bytes of a frame for entry 5: length 256, a CRC, index 5.
	torn := []byte{0, 0, 1, 0, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 5, 0x11, 0x22, 0x33, 0x44}
	patchFile(t, filepath.Join(data, "log", firstSeg), offs[5], torn)

	code, out, _ := runCmd(t, "log", "check", "--data", data)
	want := fmt.Sprintf("torn tail: 20 bytes of entry 5 at %s offset %d", firstSeg, offs[5])
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "ok: no damage") {
		t.Fatalf("check of a torn tail: exit %d, want 0 and %q in\n%s", code, want, out)
	}

	// The log has entries, so the gateway needs the log's key (it makes
	// one only for an empty log); these entries were never checkpointed,
	// so any key of the configured origin is the log's.
	cfg := devConfig(data)
	skey, _, err := note.GenerateKey(rand.Reader, cfg.Origin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "log.key"), []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	e := &env{stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
	g, err := startGateway(context.Background(), e, cfg, false)
	if err != nil {
		t.Fatalf("start on a torn tail: %v\n%s", err, stderr.String())
	}
	defer g.close()
	want = fmt.Sprintf("zeroed a torn tail of 20 bytes at %s offset %d (entry 5, never acknowledged)", firstSeg, offs[5])
	if !strings.Contains(stderr.String(), want) {
		t.Fatalf("stderr does not say %q:\n%s", want, stderr.String())
	}
	if n := g.log.Size(); n < 5 {
		t.Fatalf("log has %d entries after recovery, want the 5 acknowledged", n)
	}
}
