package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/witness"
)

// cliWitness is a real C2SP tlog-witness (internal/witness.Server) behind
// an httptest server.
type cliWitness struct {
	name, vkey string
	srv        *httptest.Server
}

func startCLIWitness(t *testing.T, name string, log note.Verifier) *cliWitness {
	t.Helper()
	skey, vkey, err := witness.GenerateKey(rand.Reader, "witness.test/"+name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := witness.NewCosigner(skey, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := witness.NewServer(c, []note.Verifier{log}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := &cliWitness{name: name, vkey: vkey, srv: httptest.NewServer(s)}
	t.Cleanup(w.srv.Close)
	return w
}

// witnessedData creates a data directory with the log's key, so that the
// witnesses can trust it before the gateway first starts.
func witnessedData(t *testing.T) (string, note.Verifier, string) {
	t.Helper()
	data := t.TempDir()
	skey, vkey, err := note.GenerateKey(rand.Reader, "test.rulelock/log")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeNewFile(filepath.Join(data, "log.key"), []byte(skey+"\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "log.pub"), []byte(vkey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return data, v, vkey
}

func withWitnesses(quorum int, ws ...*cliWitness) func(*serveConfig) {
	return func(cfg *serveConfig) {
		for _, w := range ws {
			cfg.Log.Witnesses = append(cfg.Log.Witnesses, witnessConfig{Name: w.name, URL: w.srv.URL, Key: w.vkey})
		}
		cfg.Log.WitnessQuorum = quorum
	}
}

// witnessPolicy writes a witness policy file and returns its path.
func witnessPolicy(t *testing.T, logVkey, quorum string, ws ...*cliWitness) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "log %s\n", logVkey)
	for _, w := range ws {
		fmt.Fprintf(&b, "witness %s %s %s\n", w.name, w.vkey, w.srv.URL)
	}
	b.WriteString(quorum + "\n")
	path := filepath.Join(t.TempDir(), "witnesses")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCLI runs rulelock with args and returns its exit status and output.
func runCLI(args ...string) (int, string) {
	var out bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &out, getenv: func(string) string { return "" }}
	code := run(context.Background(), e, args)
	return code, out.String()
}

func getAuth(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeWitnessed: the gateway has each checkpoint cosigned by its
// witnesses and serves it cosigned; verify --witnesses requires k of n; a
// restart on a rolled-back copy of the data directory refuses to start.
func TestServeWitnessed(t *testing.T) {
	data, v, vkey := witnessedData(t)
	a, b, c := startCLIWitness(t, "a", v), startCLIWitness(t, "b", v), startCLIWitness(t, "c", v)
	url, token, stop := testServe(t, data, withWitnesses(2, a, b))
	post(t, url, token, `{"action": {"type": "transfer", "amount": 9000, "to": "acct-7"}}`)
	status, cp := getAuth(t, url+"/v1/log/checkpoint", token)
	if status != 200 || !strings.Contains(cp, "— witness.test/a ") || !strings.Contains(cp, "— witness.test/b ") {
		t.Fatalf("checkpoint endpoint: %d\n%s", status, cp)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	tiles, err := os.ReadFile(filepath.Join(data, "tiles", "checkpoint"))
	if err != nil || !bytes.Contains(tiles, []byte("— witness.test/b ")) {
		t.Fatalf("tiles' checkpoint is not cosigned (%v):\n%s", err, tiles)
	}
	backup := t.TempDir()
	if err := exec.Command("cp", "-a", data+"/.", backup).Run(); err != nil {
		t.Fatal(err)
	}

	logDir, tilesDir := filepath.Join(data, "log"), filepath.Join(data, "tiles")
	twoOfThree := witnessPolicy(t, vkey, "group g 2 a b c\nquorum g", a, b, c)
	allThree := witnessPolicy(t, vkey, "group g all a b c\nquorum g", a, b, c)
	for _, args := range [][]string{
		{"verify", logDir, "--witnesses", twoOfThree},
		{"verify", tilesDir, "--witnesses", twoOfThree, "--key", vkey},
	} {
		if code, out := runCLI(args...); code != 0 || !strings.Contains(out, "cosigned by a, b") {
			t.Errorf("%v: exit %d\n%s", args, code, out)
		}
		args[3] = allThree // k of n with only k-1: refused
		if code, out := runCLI(args...); code != 1 || !strings.Contains(out, "FAIL unwitnessed") {
			t.Errorf("%v: exit %d, want 1 and unwitnessed\n%s", args, code, out)
		}
	}
	receipt := filepath.Join(t.TempDir(), "receipt")
	code, out := runCLI("log", "proof", logDir, "1")
	if code != 0 {
		t.Fatalf("log proof: %d %s", code, out)
	}
	os.WriteFile(receipt, []byte(out), 0o644)
	if code, out := runCLI("verify", "--receipt", receipt, "--witnesses", twoOfThree); code != 0 {
		t.Errorf("receipt with 2 of 3: exit %d\n%s", code, out)
	}
	if code, out := runCLI("verify", "--receipt", receipt, "--witnesses", allThree); code != 1 || !strings.Contains(out, "unwitnessed") {
		t.Errorf("receipt with all 3 required: exit %d\n%s", code, out)
	}
	// The policy names the log: another --key is refused.
	_, otherKey, _ := note.GenerateKey(rand.Reader, "test.rulelock/log")
	if code, out := runCLI("verify", logDir, "--witnesses", twoOfThree, "--key", otherKey); code != 2 {
		t.Errorf("a --key the policy does not list: exit %d\n%s", code, out)
	}

	// Go on, then restart on the backup: the witnesses saw more.
	url, token, stop = testServe(t, data, withWitnesses(2, a, b))
	post(t, url, token, `{"action": {"type": "transfer", "amount": 10, "to": "acct-7"}}`)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &syncBuffer{}, getenv: func(string) string { return "" }}
	cfg := devConfig(backup)
	withWitnesses(2, a, b)(cfg)
	g, err := startGateway(context.Background(), e, cfg, true)
	if err == nil {
		g.close()
		t.Fatal("a gateway on a rolled-back log started")
	}
	if !strings.Contains(err.Error(), "refusing to start") || !strings.Contains(err.Error(), "witness conflict") || !strings.Contains(fmt.Sprint(e.stderr), "ALERT") {
		t.Errorf("rolled-back start: %v\nstderr: %s", err, e.stderr)
	}
}

// TestServeWitnessConflict: a witness that has seen a larger tree while the
// gateway runs stops publication, loudly: stderr, /readyz, /metrics.
func TestServeWitnessConflict(t *testing.T) {
	data, v, _ := witnessedData(t)
	w := startCLIWitness(t, "a", v)
	stderr := &syncBuffer{}
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: stderr, getenv: func(string) string { return "" }}
	cfg := devConfig(data)
	withWitnesses(0, w)(cfg)
	g, stop := runServing(t, e, cfg, true)
	defer stop()
	url := "http://" + g.ln.Addr().String()
	waitReady(t, url)
	tok, _ := os.ReadFile(filepath.Join(data, "agent.token"))
	token := string(tok)

	// A fork: a copy of the log, grown by others with the log's key,
	// shown to the witness first.
	fork := t.TempDir()
	if err := exec.Command("cp", "-a", filepath.Join(data, "log"), fork).Run(); err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(filepath.Join(fork, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	signer, err := audit.LoadKeyFile(filepath.Join(data, "log.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := audit.ParseCosignerKey(w.vkey)
	fcp, err := audit.NewCheckpointer(l, signer, audit.CheckpointOptions{Witnesses: []audit.CheckpointWitness{{Key: key, Witness: &witness.Client{URL: w.srv.URL}}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		l.Append(context.Background(), &audit.Entry{Kind: audit.KindNote, Time: time.Unix(0, 0).UTC(), Message: fmt.Sprint("fork ", i)})
	}
	if _, err := fcp.Checkpoint(); err != nil {
		t.Fatal(err)
	}

	post(t, url, token, `{"action": {"type": "transfer", "amount": 9000, "to": "acct-7"}}`)
	for i := 0; !strings.Contains(stderr.String(), "ALERT"); i++ {
		if i == 3000 {
			t.Fatalf("no alert on stderr:\n%s", stderr)
		}
		time.Sleep(10 * time.Millisecond) // the checkpointer's next tick
	}
	// The reason is for an authenticated caller.
	if status, body := getAuth(t, url+"/readyz", token); status != 503 || !strings.Contains(body, "witness conflict") {
		t.Errorf("/readyz: %d %s", status, body)
	}
	if _, m := getAuth(t, url+"/metrics", token); !strings.Contains(m, "rulelock_witness_conflict 1") {
		t.Errorf("/metrics lacks rulelock_witness_conflict 1")
	}
	if _, cp := getAuth(t, url+"/v1/log/checkpoint", token); !strings.Contains(cp, "— witness.test/a ") {
		t.Errorf("the checkpoint served is not the last witnessed one:\n%s", cp)
	}
}

// TestWitnessConfig: the log.witnesses section is checked at load.
func TestWitnessConfig(t *testing.T) {
	_, wkey, _ := witness.GenerateKey(rand.Reader, "witness.test/a")
	_, logKey, _ := note.GenerateKey(rand.Reader, "witness.test/a")
	// The same public key under another name (cosignature/v1 does not
	// sign the name, so one signature would count for both).
	renamed := audit.FormatCosignerKey("witness.test/renamed", mustCosignerPub(t, wkey))
	for _, tc := range []struct{ yaml, want string }{
		{"log:\n  witnesses:\n    - {name: a, url: 'https://w.example/', key: '" + wkey + "'}\n  witness_quorum: 1\n", ""},
		{"log:\n  witnesses:\n    - {name: a, url: 'https://w.example/', key: '" + logKey + "'}\n", "log.witnesses[0] (a): key: parse cosigner key witness.test/a: want an Ed25519 cosignature/v1 key"},
		{"log:\n  witnesses:\n    - {name: a, url: 'w.example', key: '" + wkey + "'}\n", `log.witnesses[0] (a): url "w.example" is not an http(s) URL`},
		{"log:\n  witnesses:\n    - {url: 'https://w.example/', key: '" + wkey + "'}\n", "log.witnesses[0]: name is required"},
		{"log:\n  witnesses:\n    - {name: a, url: 'https://w.example/', key: '" + wkey + "'}\n    - {name: a, url: 'https://w.example/', key: '" + wkey + "'}\n", "log.witnesses[1]: witness a listed twice"},
		{"log:\n  witnesses:\n    - {name: a, url: 'https://w.example/', key: '" + wkey + "'}\n  witness_quorum: 2\n", "log.witness_quorum 2: want 0 (all) to 1"},
		{"log:\n  witness: []\n", "field witness not found"},
		{"log:\n  witnesses:\n    - {name: a, url: 'https://w.example/', key: '" + wkey + "'}\n    - {name: b, url: 'https://v.example/', key: '" + renamed + "'}\n", "log.witnesses[1] (b): the same witness key as a"},
		{"log:\n  witnesses:\n    - {name: a, url: 'https://w.example/', key: '" + wkey + "'}\n    - {name: b, url: 'https://v.example/', key: '" + wkey + "'}\n", "log.witnesses[1] (b): the same witness key as a"},
	} {
		path := filepath.Join(t.TempDir(), "rulelock.yaml")
		os.WriteFile(path, []byte("policy: ../../examples/payments\n"+tc.yaml), 0o644)
		_, err := readConfig(path)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.yaml, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s:\ngot  %v\nwant …%s…", tc.yaml, err, tc.want)
		}
	}
}

// mustCosignerPub returns the public key of a cosignature/v1 vkey.
func mustCosignerPub(t *testing.T, vkey string) ed25519.PublicKey {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.SplitN(vkey, "+", 3)[2])
	if err != nil || len(raw) != 33 {
		t.Fatalf("vkey %q", vkey)
	}
	return ed25519.PublicKey(raw[1:])
}
