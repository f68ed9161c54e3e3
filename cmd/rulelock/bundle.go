package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/internal/fsx"
	"github.com/rulelock/rulelock/internal/hsm"
	"github.com/rulelock/rulelock/policy"
	"github.com/rulelock/rulelock/policy/policytest"
)

const bundleUsage = `usage: rulelock bundle build DIR -o OUT --version N [--name NAME] [--expires DURATION]
       rulelock bundle sign OUT --key FILE
       rulelock bundle sign OUT --pkcs11-module PATH --token LABEL --pin-file FILE --label LABEL [--name NAME]
       rulelock bundle verify OUT --trust FILE
       rulelock bundle inspect OUT [--against OTHER]
       rulelock bundle trust --threshold M VKEY|FILE...

A bundle is a signed, immutable policy release: the policy files, a MANIFEST
listing each with its size and SHA-256, and one signature file per signer
under SIGNATURES/. build compiles the policy and runs its tests, then writes
the bundle; sign checks the files against the manifest, compiles and tests
again, and adds one signature; verify checks the files and that the trust
file's quorum of keys signed; inspect shows a reviewer what they would sign,
with a diff against another bundle; trust prints a trust file of the given
verifier keys (as keygen prints them) and threshold. See docs/bundles.md.

Exit status: 0 on success (for verify: the quorum holds), 1 on failure,
2 on bad usage.
`

// bundleCommands lists `rulelock bundle`.
func bundleCommands() []command {
	return []command{{"bundle", "build, sign, verify and inspect signed policy bundles", runBundle}}
}

func runBundle(ctx context.Context, e *env, args []string) error {
	sub := map[string]func(context.Context, *env, []string) error{
		"build": runBundleBuild, "sign": runBundleSign, "verify": runBundleVerify, "inspect": runBundleInspect,
		"trust": runBundleTrust,
	}
	if len(args) == 0 || sub[args[0]] == nil {
		fmt.Fprint(e.stderr, bundleUsage)
		if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return &exitError{code: 2}
	}
	return sub[args[0]](ctx, e, args[1:])
}

func runBundleBuild(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bundle build", "DIR -o OUT --version N [--name NAME] [--expires DURATION]")
	out := fs.String("o", "", "bundle `directory` to create (required; must not exist)")
	version := fs.Uint64("version", 0, "bundle version, higher than the active bundle's (required)")
	name := fs.String("name", "", "bundle `name` (default: DIR's base name)")
	expires := fs.Duration("expires", 0, "expire the bundle this long after now (default: never)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 1:
		return usageError("want one policy directory")
	case *out == "":
		return usageError("-o OUT is required")
	case *version == 0:
		return usageError("--version N (from 1) is required")
	case *expires < 0:
		return usageError("--expires must be positive")
	}
	dir := pos[0]
	if *name == "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return err
		}
		*name = filepath.Base(abs)
	}
	files, err := readBundleSources(e, dir)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	created := time.Now().UTC().Truncate(time.Second)
	var exp time.Time
	if *expires > 0 {
		exp = created.Add(*expires).Truncate(time.Second)
	}
	m, err := bundle.NewManifest(*name, *version, created, exp, files)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	if err := checkPolicy(e, dir, files); err != nil {
		return err
	}
	if err := writeBundle(*out, m, files); err != nil {
		return &exitError{code: 1, err: err}
	}
	fmt.Fprintf(e.stdout, "built bundle %s version %d: %d files in %s\ndigest %s\n", m.Name, m.Version, len(m.Files), *out, m.Digest())
	return nil
}

// readBundleSources reads the policy, data and test files at the root of
// dir, as policy.ReadSources does, and says which files it leaves out.
func readBundleSources(e *env, dir string) ([]policy.Source, error) {
	// os.DirFS names a missing directory ".": name it as given.
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	fsys := os.DirFS(dir)
	srcs, err := policy.ReadSources(fsys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	for _, ent := range entries {
		switch {
		case policy.IsPolicyFile(ent.Name()):
		case policy.IsTestFile(ent.Name()) && !ent.IsDir():
			if !ent.Type().IsRegular() {
				return nil, fmt.Errorf("%s: test file %s is not a regular file", dir, ent.Name())
			}
			data, err := fs.ReadFile(fsys, ent.Name())
			if err != nil {
				return nil, err
			}
			srcs = append(srcs, policy.Source{Name: ent.Name(), Data: data})
		default:
			fmt.Fprintf(e.stderr, "rulelock bundle: leaving out %s (not a policy, data or test file)\n", filepath.Join(dir, ent.Name()))
		}
	}
	return srcs, nil
}

// checkPolicy compiles the policy in files and runs its tests; it refuses a
// policy that does not compile, has no tests or fails one.
func checkPolicy(e *env, dir string, files []policy.Source) error {
	var srcs []policy.Source
	var suites []*policytest.Suite
	for _, f := range files {
		if !policy.IsTestFile(f.Name) {
			srcs = append(srcs, f)
			continue
		}
		s, err := policytest.Parse(f.Name, f.Data)
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		suites = append(suites, s)
	}
	p, err := policy.FromSources(srcs, policy.Options{})
	var list policy.ErrorList
	if errors.As(err, &list) {
		for _, pe := range list {
			fmt.Fprintf(e.stderr, "%s: %s\n", dir, pe)
		}
		return &exitError{code: 1, err: errors.New("the policy does not compile")}
	}
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	for _, w := range p.Warnings() {
		fmt.Fprintf(e.stderr, "%s: %s: warning: %s\n", dir, w.Pos, w.Msg)
	}
	if len(suites) == 0 {
		return &exitError{code: 1, err: errors.New("no policy tests (*_test.yaml): the gateway runs a bundle's tests before activating it")}
	}
	res, err := policytest.Run(p, suites, policytest.Options{})
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	for _, c := range res.Cases {
		if c.Failure != "" {
			fmt.Fprintf(e.stderr, "FAIL %s: %s\n%s\n", c.File, c.Name, indent(c.Failure))
		}
	}
	if res.Failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d of %d policy tests failed", res.Failed, res.Failed+res.Passed)}
	}
	fmt.Fprintf(e.stderr, "rulelock bundle: policy compiles; %d tests passed\n", res.Passed)
	return nil
}

// writeBundle writes the files and the manifest into a new directory next
// to out and renames it to out, so out appears whole or not at all.
func writeBundle(out string, m *bundle.Manifest, files []policy.Source) (err error) {
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("%s exists; refusing to overwrite it", out)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if err := fsx.CreateSynced(filepath.Join(tmp, f.Name), f.Data, 0o644); err != nil {
			return err
		}
	}
	if err := fsx.CreateSynced(filepath.Join(tmp, bundle.ManifestFile), m.Marshal(), 0o644); err != nil {
		return err
	}
	if err := fsx.SyncDir(tmp); err != nil {
		return err
	}
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("%s exists; refusing to overwrite it", out)
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	return fsx.SyncDir(filepath.Dir(out))
}

func runBundleSign(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bundle sign", "OUT --key FILE | --pkcs11-module PATH --token LABEL --pin-file FILE --label LABEL [--name NAME]")
	keyFile := fs.String("key", "", "signing key `file` (rulelock keygen)")
	module := fs.String("pkcs11-module", "", "sign with a key on a token of this PKCS#11 module (`path`)")
	token := fs.String("token", "", "PKCS#11 token `label`")
	pinFile := fs.String("pin-file", "", "`file` holding the token's user PIN")
	label := fs.String("label", "", "PKCS#11 key `label`")
	keyName := fs.String("name", "", "note key `name` of the PKCS#11 key (default: its label)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 1:
		return usageError("want one bundle directory")
	case (*keyFile == "") == (*module == ""):
		return usageError("want --key FILE or --pkcs11-module PATH")
	case *module != "" && (*token == "" || *pinFile == "" || *label == ""):
		return usageError("--pkcs11-module needs --token, --pin-file and --label")
	case *module == "" && (*token != "" || *pinFile != "" || *label != "" || *keyName != ""):
		return usageError("--token, --pin-file, --label and --name need --pkcs11-module")
	}
	dir := pos[0]
	b, err := bundle.ReadDir(dir)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	if err := checkPolicy(e, dir, b.Files); err != nil {
		return err
	}
	signer, err := openSigner(*keyFile, hsm.Config{Module: *module, Token: *token, Label: *label, Name: *keyName}, *pinFile)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	defer signer.Close()
	path, data, err := bundle.Sign(b, signer)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	full := filepath.Join(dir, filepath.FromSlash(path))
	if old, err := os.ReadFile(full); err == nil {
		if bytes.Equal(old, data) {
			fmt.Fprintf(e.stdout, "bundle %s version %d is already signed by %s+%08x\n", b.Manifest.Name, b.Manifest.Version, signer.Name(), signer.KeyHash())
			return nil
		}
		return &exitError{code: 1, err: fmt.Errorf("%s exists and holds another signature; refusing to overwrite it", full)}
	}
	if err := os.Mkdir(filepath.Dir(full), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return &exitError{code: 1, err: err}
	}
	if err := fsx.WriteNewFile(full, data, 0o644); err != nil {
		return &exitError{code: 1, err: err}
	}
	fmt.Fprintf(e.stdout, "signed bundle %s version %d, digest %s, as %s+%08x: %s\n",
		b.Manifest.Name, b.Manifest.Version, b.Digest(), signer.Name(), signer.KeyHash(), path)
	return nil
}

// closingSigner is a note.Signer that may hold a token session.
type closingSigner interface {
	note.Signer
	Close() error
}

type fileSigner struct{ note.Signer }

func (fileSigner) Close() error { return nil }

// openSigner loads the key file, or opens the PKCS#11 key when keyFile is empty.
func openSigner(keyFile string, cfg hsm.Config, pinFile string) (closingSigner, error) {
	if keyFile != "" {
		s, err := audit.LoadKeyFile(keyFile)
		if err != nil {
			return nil, err
		}
		return fileSigner{s}, nil
	}
	pin, err := readPIN(pinFile)
	if err != nil {
		return nil, err
	}
	cfg.PIN = pin
	return hsm.Open(cfg)
}

func runBundleVerify(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bundle verify", "OUT --trust FILE")
	trustFile := fs.String("trust", "", "trust `file`: the trusted keys and the threshold (required)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 1:
		return usageError("want one bundle directory")
	case *trustFile == "":
		return usageError("--trust FILE is required")
	}
	trust, err := loadTrust(*trustFile)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	b, err := bundle.ReadDir(pos[0])
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	printBundleHeader(e.stdout, b)
	fmt.Fprintf(e.stdout, "signatures %s\n", orNone(claimedSigners(b)))
	v, err := b.Verify(trust, time.Now())
	if err != nil {
		fmt.Fprintf(e.stdout, "quorum     NOT MET: %d of %d trusted keys required\n", trust.Threshold(), len(trust.Keys()))
		return &exitError{code: 1, err: err}
	}
	fmt.Fprintf(e.stdout, "trusted    %s\n", strings.Join(v.Signers, ", "))
	if len(v.Unknown) > 0 {
		fmt.Fprintf(e.stdout, "untrusted  %s (not counted)\n", strings.Join(v.Unknown, ", "))
	}
	fmt.Fprintf(e.stdout, "quorum     ok: %d of %d trusted keys signed, %d required\n", len(v.Signers), len(trust.Keys()), trust.Threshold())
	return nil
}

func loadTrust(path string) (*bundle.Trust, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load trust file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("load trust file: %w", err)
	}
	t, err := bundle.ParseTrust(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

func printBundleHeader(w io.Writer, b *bundle.Bundle) {
	m := b.Manifest
	expires := "never"
	if !m.Expires.IsZero() {
		expires = m.Expires.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "bundle     %s\nversion    %d\ndigest     %s\ncreated    %s\nexpires    %s\n",
		m.Name, m.Version, b.Digest(), m.Created.Format(time.RFC3339), expires)
}

// claimedSigners lists the keys (name+hash) the signature files name,
// without verifying them.
func claimedSigners(b *bundle.Bundle) []string {
	var list []string
	for _, s := range b.Signatures {
		_, err := note.Open(s.Data, nil)
		var un *note.UnverifiedNoteError
		if !errors.As(err, &un) {
			list = append(list, s.Path+" (malformed)")
			continue
		}
		for _, sig := range un.Note.UnverifiedSigs {
			list = append(list, fmt.Sprintf("%s+%08x", sig.Name, sig.Hash))
		}
	}
	return list
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

func runBundleInspect(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bundle inspect", "OUT [--against OTHER]")
	against := fs.String("against", "", "another bundle `directory` (usually the active one) to diff against")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("want one bundle directory")
	}
	b, err := bundle.ReadDir(pos[0])
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	printBundleHeader(e.stdout, b)
	fmt.Fprintln(e.stdout, "files")
	for _, f := range b.Manifest.Files {
		fmt.Fprintf(e.stdout, "  sha256:%s %7d %s\n", hex.EncodeToString(f.SHA256[:]), f.Size, f.Path)
	}
	fmt.Fprintf(e.stdout, "signatures %s (not verified: use bundle verify --trust)\n", orNone(claimedSigners(b)))
	if *against == "" {
		return nil
	}
	old, err := bundle.ReadDir(*against)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("%s: %w", *against, err)}
	}
	printBundleDiff(e.stdout, old, b)
	return nil
}

func runBundleTrust(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bundle trust", "--threshold M VKEY|FILE...")
	threshold := fs.Int("threshold", 0, "how many distinct keys must sign a bundle (required)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 || *threshold < 1 {
		return usageError("want --threshold M (from 1) and at least one verifier key")
	}
	var keys []string
	for _, arg := range pos {
		k, err := readVerifierKey(arg)
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		keys = append(keys, k)
	}
	t, err := bundle.NewTrust(*threshold, keys...)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	_, err = e.stdout.Write(t.Marshal())
	return err
}

// readVerifierKey returns arg if it is a verifier key (NAME+HASH+KEY), or
// else the verifier key in the file arg.
func readVerifierKey(arg string) (string, error) {
	if _, err := note.NewVerifier(arg); err == nil {
		return arg, nil
	}
	f, err := os.Open(arg)
	if err != nil {
		return "", fmt.Errorf("%s: neither a verifier key nor a readable file: %w", arg, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", err
	}
	k := strings.TrimSpace(string(b))
	if _, err := note.NewVerifier(k); err != nil {
		return "", fmt.Errorf("%s: %w", arg, err)
	}
	return k, nil
}

// printBundleDiff prints what changed from old to b: the version, then each
// file added, removed or changed, with a line diff.
func printBundleDiff(w io.Writer, old, b *bundle.Bundle) {
	fmt.Fprintf(w, "against    %s version %d, digest %s\n", old.Manifest.Name, old.Manifest.Version, old.Digest())
	if b.Manifest.Version <= old.Manifest.Version {
		fmt.Fprintf(w, "WARNING    version %d is not higher than %d: a gateway running that bundle will refuse this one\n", b.Manifest.Version, old.Manifest.Version)
	}
	oldFiles := map[string][]byte{}
	for _, f := range old.Files {
		oldFiles[f.Name] = f.Data
	}
	newFiles := map[string][]byte{}
	for _, f := range b.Files {
		newFiles[f.Name] = f.Data
	}
	changed := 0
	for _, f := range old.Files {
		if _, ok := newFiles[f.Name]; !ok {
			fmt.Fprintf(w, "removed    %s\n", f.Name)
			lineDiff(w, f.Name, "/dev/null", f.Data, nil)
			changed++
		}
	}
	for _, f := range b.Files {
		data, ok := oldFiles[f.Name]
		switch {
		case !ok:
			fmt.Fprintf(w, "added      %s\n", f.Name)
			lineDiff(w, "/dev/null", f.Name, nil, f.Data)
		case !bytes.Equal(data, f.Data):
			fmt.Fprintf(w, "changed    %s\n", f.Name)
			lineDiff(w, f.Name, f.Name, data, f.Data)
		default:
			continue
		}
		changed++
	}
	if changed == 0 {
		fmt.Fprintln(w, "no file changed")
	}
}

// maxDiffCells caps the line diff's table (lines of one file times lines of
// the other): policy files are small, and a reviewer of anything larger
// needs another tool.
const maxDiffCells = 4 << 20

type diffLine struct {
	op   byte // ' ', '-' or '+'
	text string
}

// lineDiff prints a unified diff of a and b with three lines of context.
func lineDiff(w io.Writer, oldName, newName string, a, b []byte) {
	x, y := splitLines(a), splitLines(b)
	if (len(x)+1)*(len(y)+1) > maxDiffCells {
		fmt.Fprintf(w, "  (%d lines to %d lines: too large for a line diff)\n", len(x), len(y))
		return
	}
	label := func(prefix, name string) string {
		if name == "/dev/null" {
			return name
		}
		return prefix + name
	}
	fmt.Fprintf(w, "--- %s\n+++ %s\n", label("a/", oldName), label("b/", newName))
	printHunks(w, diffLines(x, y), 3)
}

func splitLines(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	return strings.SplitAfter(string(b), "\n")[:bytes.Count(b, []byte("\n"))+boolInt(b[len(b)-1] != '\n')]
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// diffLines returns an edit script from x to y along a longest common
// subsequence of lines.
func diffLines(x, y []string) []diffLine {
	n, m := len(x), len(y)
	lcs := make([]int32, (n+1)*(m+1)) // lcs[i*(m+1)+j]: LCS of x[i:] and y[j:]
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i*(m+1)+j] = lcs[(i+1)*(m+1)+j+1] + 1
			} else {
				lcs[i*(m+1)+j] = max(lcs[(i+1)*(m+1)+j], lcs[i*(m+1)+j+1])
			}
		}
	}
	var ops []diffLine
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case x[i] == y[j]:
			ops = append(ops, diffLine{' ', x[i]})
			i, j = i+1, j+1
		case lcs[(i+1)*(m+1)+j] >= lcs[i*(m+1)+j+1]:
			ops = append(ops, diffLine{'-', x[i]})
			i++
		default:
			ops = append(ops, diffLine{'+', y[j]})
			j++
		}
	}
	for ; i < n; i++ {
		ops = append(ops, diffLine{'-', x[i]})
	}
	for ; j < m; j++ {
		ops = append(ops, diffLine{'+', y[j]})
	}
	return ops
}

// printHunks prints the changes in ops as unified-diff hunks with ctx lines
// of context, merging hunks whose context would overlap.
func printHunks(w io.Writer, ops []diffLine, ctx int) {
	oldPos, newPos := make([]int, len(ops)+1), make([]int, len(ops)+1)
	for i, op := range ops {
		oldPos[i+1], newPos[i+1] = oldPos[i]+boolInt(op.op != '+'), newPos[i]+boolInt(op.op != '-')
	}
	for i := 0; i < len(ops); {
		if ops[i].op == ' ' {
			i++
			continue
		}
		start, end := max(0, i-ctx), i
		for end < len(ops) {
			if ops[end].op != ' ' {
				end++
				continue
			}
			k := end
			for k < len(ops) && ops[k].op == ' ' {
				k++
			}
			if k == len(ops) || k-end > 2*ctx {
				break
			}
			end = k
		}
		stop := min(len(ops), end+ctx)
		fmt.Fprintf(w, "@@ -%s +%s @@\n", hunkRange(oldPos[start], oldPos[stop]), hunkRange(newPos[start], newPos[stop]))
		for _, op := range ops[start:stop] {
			fmt.Fprintf(w, "%c%s", op.op, op.text)
			if !strings.HasSuffix(op.text, "\n") {
				fmt.Fprint(w, "\n\\ No newline at end of file\n")
			}
		}
		i = stop
	}
}

// hunkRange formats lines [from, to) (0-based) as unified diff's start,count.
func hunkRange(from, to int) string {
	if to == from {
		return fmt.Sprintf("%d,0", from)
	}
	if to-from == 1 {
		return fmt.Sprintf("%d", from+1)
	}
	return fmt.Sprintf("%d,%d", from+1, to-from)
}
