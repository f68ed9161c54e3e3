package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
)

// TestVerifyEquivocation checks two signed checkpoints against each other
// without the log: one size with two roots is proven, two sizes need the
// log's tiles (or a proof), and the proof printed is the two notes.
func TestVerifyEquivocation(t *testing.T) {
	skey, vkey, err := note.GenerateKey(rand.Reader, "test.rulelock/log")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	dir := t.TempDir()
	// grow builds a log whose entries from 3 on carry tag, and writes
	// its checkpoints at the sizes given to files.
	grow := func(name, tag string, sizes ...int64) (tiles string, files []string) {
		tiles = filepath.Join(dir, name+"-tiles")
		l, err := audit.Open(filepath.Join(dir, name), audit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		cp, err := audit.NewCheckpointer(l, signer, audit.CheckpointOptions{TilesDir: tiles})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			msg := fmt.Sprint("entry ", i)
			if i >= 3 {
				msg += " " + tag
			}
			if _, err := l.Append(context.Background(), &audit.Entry{Kind: audit.KindNote, Time: time.Unix(0, 0).UTC(), Message: msg}); err != nil {
				t.Fatal(err)
			}
			for _, n := range sizes {
				if l.Size() == n {
					b, err := cp.Checkpoint()
					if err != nil {
						t.Fatal(err)
					}
					f := filepath.Join(dir, fmt.Sprintf("%s-%d", name, n))
					os.WriteFile(f, b, 0o644)
					files = append(files, f)
				}
			}
		}
		return tiles, files
	}
	tiles, honest := grow("honest", "paid", 5, 10)
	_, fork := grow("fork", "paid twice", 5, 7)

	code, out := runCLI("verify", "--equivocation", honest[0], fork[0], "--key", vkey)
	if code != 1 || !strings.Contains(out, "FAIL equivocation") {
		t.Fatalf("one size, two roots: exit %d\n%s", code, out)
	}
	for _, f := range []string{honest[0], fork[0]} {
		b, _ := os.ReadFile(f)
		if !strings.Contains(out, string(b)) {
			t.Errorf("the proof printed lacks %s:\n%s", f, out)
		}
	}
	code, out = runCLI("verify", "--equivocation", honest[1], fork[1], "--key", vkey, "--json")
	if code != 1 || !strings.Contains(out, `"proven":false`) {
		t.Errorf("two sizes, nothing else: exit %d\n%s", code, out)
	}
	code, out = runCLI("verify", "--equivocation", honest[1], fork[1], "--key", vkey, "--tiles", tiles, "--json")
	var res struct {
		OK    bool     `json:"ok"`
		Class string   `json:"class"`
		Proof []string `json:"proof"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 1 || res.Class != "equivocation" || len(res.Proof) != 2 {
		t.Errorf("two sizes with the honest tiles: exit %d (%v)\n%s", code, err, out)
	}
	if code, out := runCLI("verify", "--equivocation", honest[0], honest[1], "--key", vkey, "--tiles", tiles); code != 0 {
		t.Errorf("the honest log's own checkpoints: exit %d\n%s", code, out)
	}
	_, otherKey, _ := note.GenerateKey(rand.Reader, "test.rulelock/log")
	if code, out := runCLI("verify", "--equivocation", honest[0], fork[0], "--key", otherKey); code != 1 || !strings.Contains(out, "unknown_key") {
		t.Errorf("notes not signed by --key: exit %d\n%s", code, out)
	}
	if code, _ := runCLI("verify", "--equivocation", honest[0], "--key", vkey); code != 2 {
		t.Errorf("one note: exit %d, want 2", code)
	}
}
