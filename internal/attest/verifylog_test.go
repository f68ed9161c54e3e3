package attest_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/attest"
	"github.com/rulelock/rulelock/internal/attest/swtpmtest"
)

// attestedLog is a log written as an attested gateway writes it, over two
// boots of a real (software) TPM.
type attestedLog struct {
	dir      string
	logKey   note.Verifier
	policy   *attest.Policy
	entries  [][]byte
	cps      [][]byte
	attested []int64 // indexes of the attestation entries
}

func signerKeys(t *testing.T) (names, vkeys []string) {
	t.Helper()
	for _, n := range []string{"alice", "bob", "carol"} {
		_, vk, err := note.GenerateKey(rand.Reader, n)
		if err != nil {
			t.Fatal(err)
		}
		names, vkeys = append(names, n), append(vkeys, vk)
	}
	return names, vkeys
}

func writeAttestedLog(t *testing.T) *attestedLog {
	t.Helper()
	ctx := context.Background()
	sw := swtpmtest.Start(t)
	dir := filepath.Join(t.TempDir(), "log")
	l, err := audit.Open(dir, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	logSigner, _ := note.NewSigner(skey)
	logKey, _ := note.NewVerifier(vkey)
	_, signers := signerKeys(t)
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	tick := func() time.Time { now = now.Add(time.Minute); return now }

	var pin string
	appendE := func(e *audit.Entry) {
		t.Helper()
		if _, err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	decide := func(bundle string, n int) {
		for k := range n {
			action := fmt.Sprintf(`{"n":%d,"type":"transfer"}`, k)
			appendE(&audit.Entry{Kind: audit.KindDecision, Time: tick(), Agent: "agent-1", RequestID: fmt.Sprintf("r-%d", l.Size()),
				Action: audit.Text(action), ActionSHA256: sha256.Sum256([]byte(action)), Decision: "allow", BundleDigest: bundle})
		}
	}
	bootOnce := func(prev string, bundle string) {
		tp := openTPM(t, sw)
		defer tp.Close()
		pin, _ = tp.AttestationKey()
		var cp *audit.Checkpointer
		rec, err := attest.NewRecorder(tp, attest.RecorderOptions{Origin: origin, Engine: engine, Signers: signers, Threshold: 2,
			Prev: prev, Checkpoint: func() []byte { return cp.Latest() }, Now: tick})
		if err != nil {
			t.Fatal(err)
		}
		if cp, err = audit.NewCheckpointer(l, logSigner, audit.CheckpointOptions{Cosigners: []note.Signer{rec.Signer()}}); err != nil {
			t.Fatal(err)
		}
		if err := rec.Record(ctx, l); err != nil { // at start, before any decision
			t.Fatal(err)
		}
		appendE(&audit.Entry{Kind: audit.KindPolicyActivation, Time: tick(), BundleDigest: bundle, Signers: []string{"alice", "bob"}})
		if err := rec.Activated(ctx, l, bundle); err != nil {
			t.Fatal(err)
		}
		decide(bundle, 3)
		if _, err := cp.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		if err := rec.Record(ctx, l); err != nil { // periodic
			t.Fatal(err)
		}
		decide(bundle, 2)
		if _, err := cp.Checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	bootOnce("", bundle1)
	prev, err := attest.LastStatement(l)
	if err != nil || prev == "" {
		t.Fatalf("last statement %q, %v", prev, err)
	}
	sw.Reboot()
	bootOnce(prev, bundle2)

	a := &attestedLog{dir: dir, logKey: logKey}
	for i := range l.Size() {
		b, err := l.ReadEntry(i)
		if err != nil {
			t.Fatal(err)
		}
		a.entries = append(a.entries, b)
		if bytes.Contains(b, []byte(`"kind":"attestation"`)) {
			a.attested = append(a.attested, i)
		}
	}
	if a.cps, err = audit.DirCheckpoints(dir); err != nil {
		t.Fatal(err)
	}
	pol := fmt.Sprintf("# test policy\norigin %s\ntpm-ak %s\nrelease v1.0.0 %s\nthreshold 2\nmax-gap 1h\n", origin, pin, engine)
	for _, s := range signers {
		pol += "signer " + s + "\n"
	}
	if a.policy, err = attest.ParsePolicy("policy", []byte(pol)); err != nil {
		t.Fatal(err)
	}
	return a
}

// entries is an in-memory EntryReader.
type entries [][]byte

func (e entries) Size() int64 { return int64(len(e)) }
func (e entries) ReadEntries(lo, hi int64) ([][]byte, error) {
	return e[lo:hi], nil
}

func TestVerifyLog(t *testing.T) {
	a := writeAttestedLog(t)
	if _, err := audit.VerifyDir(a.dir, a.logKey, audit.VerifyOptions{}); err != nil {
		t.Fatalf("the log itself: %v", err)
	}
	snap, err := audit.OpenSnapshot(a.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	rep, err := attest.VerifyLog(snap, a.cps, a.policy)
	if err != nil {
		t.Fatalf("verify --attestation: %v", err)
	}
	if rep.Attestations != 6 || rep.Decisions != 10 || len(rep.Segments) != 4 || rep.Checkpoints != 4 {
		t.Errorf("report %+v", rep)
	}
	wantBundles := []string{"", bundle1, "", bundle2}
	for k, s := range rep.Segments {
		if s.Bundle != wantBundles[k] || s.Release != "v1.0.0" || s.Engine != engine {
			t.Errorf("segment %d: %+v", k, s)
		}
		t.Logf("segment %d..%d: %s bundle %q key %s, %d attestations, %d decisions", s.First, s.Last, s.Release, s.Bundle, s.Key, s.Attestations, s.Decisions)
	}
	if rep.Segments[0].Key == rep.Segments[2].Key {
		t.Error("the two boots have the same per-boot key")
	}
}

func TestVerifyLogRefuses(t *testing.T) {
	a := writeAttestedLog(t)
	without := func(i int64) entries {
		out := append(entries(nil), a.entries[:i]...)
		return append(out, a.entries[i+1:]...)
	}
	stripped := func(k int) [][]byte {
		out := append([][]byte(nil), a.cps...)
		msg := string(out[k])
		// The per-boot key's signature is the line naming origin/boot.
		lines := strings.Split(msg, "\n")
		var kept []string
		for _, l := range lines {
			if !strings.HasPrefix(l, "— "+origin+"/boot ") {
				kept = append(kept, l)
			}
		}
		out[k] = []byte(strings.Join(kept, "\n"))
		if bytes.Equal(out[k], a.cps[k]) {
			t.Fatal("no per-boot signature to strip")
		}
		return out
	}
	// rewrite returns the entries with the first entry of kind changed by f.
	rewrite := func(kind audit.Kind, f func(*audit.Entry)) entries {
		out := append(entries(nil), a.entries...)
		for i, b := range out {
			e, err := audit.DecodeEntry(b)
			if err != nil {
				t.Fatal(err)
			}
			if e.Kind == kind {
				f(e)
				if out[i], err = e.Encode(); err != nil {
					t.Fatal(err)
				}
				return out
			}
		}
		t.Fatalf("no %s entry", kind)
		return nil
	}
	// resigned replaces a checkpoint's per-boot signature by one of
	// another key with the same name: a key the platform never saw.
	resigned := func(k int) [][]byte {
		out := stripped(k)
		skey, _, err := note.GenerateKey(rand.Reader, origin+"/boot")
		if err != nil {
			t.Fatal(err)
		}
		rogue, _ := note.NewSigner(skey)
		text, _, _ := strings.Cut(string(out[k]), "\n\n")
		n, err := note.Sign(&note.Note{Text: text + "\n"}, rogue)
		if err != nil {
			t.Fatal(err)
		}
		_, sig, _ := strings.Cut(string(n), "\n\n")
		out[k] = append(out[k], sig...)
		return out
	}
	noRelease := *a.policy
	noRelease.Releases = map[string]string{"sha256:" + strings.Repeat("00", 32): "other"}
	otherAK := *a.policy
	otherAK.AttestationKeys = []string{strings.Repeat("11", 32)}
	tight := *a.policy
	tight.MaxGap = time.Minute
	threeOfThree := *a.policy
	threeOfThree.Threshold = 3

	cases := []struct {
		name string
		r    entries
		cps  [][]byte
		pol  *attest.Policy
	}{
		{"an attestation entry removed (the first)", without(a.attested[0]), a.cps, a.policy},
		{"an attestation entry removed (after an activation)", without(a.attested[1]), a.cps, a.policy},
		{"an attestation entry removed (the periodic one)", without(a.attested[2]), a.cps, a.policy},
		{"one checkpoint's second signature removed", a.entries, stripped(1), a.policy},
		{"a checkpoint signed by another per-boot key", a.entries, resigned(1), a.policy},
		{"an engine no release has", a.entries, a.cps, &noRelease},
		{"a TPM not enrolled", a.entries, a.cps, &otherAK},
		{"a gap over max-gap", a.entries, a.cps, &tight},
		{"another signer set", a.entries, a.cps, &threeOfThree},
		{"an activation below the threshold", rewrite(audit.KindPolicyActivation, func(e *audit.Entry) { e.Signers = []string{"alice", "mallory"} }), a.cps, a.policy},
		{"a decision under a bundle not attested", rewrite(audit.KindDecision, func(e *audit.Entry) { e.BundleDigest = bundle2 }), a.cps, a.policy},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := attest.VerifyLog(c.r, c.cps, c.pol)
			var le *attest.LogError
			if !errors.As(err, &le) {
				t.Fatalf("got %v, want a LogError", err)
			}
			t.Log(err)
		})
	}
}

// TestVerifyLogOtherPlatforms: an attestation entry carrying SEV-SNP, TDX
// or Nitro evidence is verified by its own verifier. The published samples
// carry no rulelock statement, so each is refused, for not binding the
// statement (or, with no pin for its platform, for that).
func TestVerifyLogOtherPlatforms(t *testing.T) {
	_, key, err := note.GenerateKey(rand.Reader, origin+"/boot")
	if err != nil {
		t.Fatal(err)
	}
	s := &attest.Statement{Origin: origin, Engine: engine, Key: key}
	text, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	snp, _, snpRoots := snpSample(t)
	tdx, _, tdxRoots := tdxSample(t)
	nitro := nitroSample(t)
	base := fmt.Sprintf("origin %s\nrelease v1 %s\nmax-gap 1h\n", origin, engine)
	cases := []struct {
		name, policy, want string
		ev                 attest.Evidence
	}{
		{"sev-snp", base + "snp-measurement " + snpRoots.Measurements[0] + "\n", "REPORT_DATA", snp},
		{"sev-snp, no pin", base + "tdx-mrtd " + tdxRoots.MrTDs[0] + "\n", "pins no snp-measurement", snp},
		{"tdx", base + "tdx-mrtd " + tdxRoots.MrTDs[0] + "\n", "REPORT_DATA", tdx},
		{"nitro", base + "nitro-pcr0 " + strings.Repeat("ab", 48) + "\n", "debug-mode", nitro},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pol, err := attest.ParsePolicy("policy", []byte(c.policy))
			if err != nil {
				t.Fatal(err)
			}
			b, err := (&audit.Entry{Kind: audit.KindAttestation, Time: time.Now(), Statement: string(text),
				Provider: c.ev.Provider, Evidence: c.ev.Report, Collateral: c.ev.Collateral}).Encode()
			if err != nil {
				t.Fatal(err)
			}
			_, err = attest.VerifyLog(entries{b}, nil, pol)
			if !errors.Is(err, attest.ErrEvidence) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want refused for %q", err, c.want)
			}
			t.Log(err)
		})
	}
}

func TestParsePolicyRefuses(t *testing.T) {
	base := "origin o\nrelease v1 sha256:" + strings.Repeat("1e", 32) + "\nmax-gap 1h\n"
	for name, p := range map[string]string{
		"no root of trust":  base,
		"unknown directive": base + "tpm-ak " + strings.Repeat("00", 32) + "\nallow-debug yes\n",
		"short measurement": base + "snp-measurement abcd\n",
		"upper-case pin":    base + "tpm-ak " + strings.Repeat("AB", 32) + "\n",
		"threshold above N": base + "tpm-ak " + strings.Repeat("00", 32) + "\nthreshold 2\n",
		"origin twice":      "origin p\n" + base + "tpm-ak " + strings.Repeat("00", 32) + "\n",
		"no max-gap":        "origin o\nrelease v1 sha256:" + strings.Repeat("1e", 32) + "\ntpm-ak " + strings.Repeat("00", 32) + "\n",
	} {
		if _, err := attest.ParsePolicy("p", []byte(p)); err == nil {
			t.Errorf("%s: parsed", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
