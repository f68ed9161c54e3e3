package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
)

const logUsage = `usage: rulelock log show DIR INDEX
       rulelock log reveal --data DATADIR INDEX PATH
       rulelock log proof DIR INDEX [--key VKEY]
       rulelock log check [--data DIR | LOGDIR] [--json]
       rulelock log find [--data DIR] [--request ID] [--agent A] [--type T] [--decision D] [--rule R]
                         [--kind K] [--since T] [--until T] [--from N] [--limit N] [--json] [--no-update]
       rulelock log append DIR            (one note entry per line of standard input)
       rulelock log checkpoint DIR --key KEYFILE [--tiles DIR]
       rulelock log export --store DSN --out DIR
       rulelock log rotate-key DATA --new VKEY [--key FILE | --pkcs11-module PATH --token LABEL --pin-file FILE --label LABEL]

show prints the encoded entry at INDEX. reveal prints the sensitive value at
PATH (action.NAME for a member of the action, or instruction, reasoning,
result, state) of entry INDEX of the log in the gateway's data directory (or
of the log directory DATADIR), opened with its salt (DATADIR/log/salts.jsonl)
and checked against the commitment in the log; it fails once the salts are
deleted (crypto-shredded). proof prints a self-contained
receipt for it (entry, inclusion proof, signed checkpoint) that
rulelock verify --receipt checks alone; with --key the log is verified first.
check reads the log of a gateway's data directory (or the log directory
LOGDIR) as the gateway's recovery would, read-only and without its lock (it
works while a gateway runs), and reports its segments, entries, last
checkpoint, a torn tail the next start repairs, and any damage that stops the
gateway from starting, with the entry, segment file and offset; exit status
1 on damage. find prints the entries of the gateway's log that meet every
criterion given, in log order, using the search index in DIR/index (built
from the log and updated first; never the source of truth: results are read
back from the log), read-only on the log, beside a running gateway; --since
and --until take an RFC 3339 time or a duration before now (24h). append and checkpoint are for operators and tests: they open the
log (exclusively) to add note entries or sign a checkpoint with a key file.
export writes the log that gateway replicas keep in PostgreSQL (--store)
to DIR as a C2SP tlog-tiles directory (checkpoint, hash tiles, entry
bundles) as of its latest checkpoint, which rulelock verify checks.
rotate-key changes the signing key of the gateway's log in the data
directory DATA (the gateway stopped): it appends a key rotation entry naming
the current key (DATA/log.key, or --key, or the PKCS#11 key) and the new
one, signs a checkpoint covering it with the current key, and writes the new
verifier key to DATA/log.pub. Every later checkpoint must be signed by the
new key; see docs/signing-keys.md.

`

// runLog implements `rulelock log`.
func runLog(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, logUsage)
		return &exitError{code: 2}
	}
	switch args[0] {
	case "reveal":
		return runLogReveal(e, args[1:])
	case "show":
		return runLogShow(e, args[1:])
	case "proof":
		return runLogProof(e, args[1:])
	case "check":
		return runLogCheck(e, args[1:])
	case "find":
		return runLogFind(ctx, e, args[1:])
	case "append":
		return runLogAppend(ctx, e, args[1:])
	case "checkpoint":
		return runLogCheckpoint(e, args[1:])
	case "rotate-key":
		return runLogRotateKey(e, args[1:])
	case "export":
		return runLogExport(ctx, e, args[1:])
	case "-h", "--help", "help":
		fmt.Fprint(e.stderr, logUsage)
		return nil
	}
	return usageError("unknown log subcommand %q", args[0])
}

// cliLogOptions are the options of logs the CLI opens: small segments, as
// an operator's log append writes few entries (the size of existing segments
// is kept).
var cliLogOptions = audit.Options{SegmentSize: 1 << 20}

func logFlags(e *env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("log "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), logUsage); fs.PrintDefaults() }
	return fs
}

func dirIndex(pos []string) (string, int64, error) {
	if len(pos) != 2 {
		return "", 0, usageError("want DIR INDEX")
	}
	i, err := strconv.ParseInt(pos[1], 10, 64)
	if err != nil || i < 0 {
		return "", 0, usageError("bad index %q", pos[1])
	}
	return pos[0], i, nil
}

func runLogShow(e *env, args []string) error {
	pos, err := parseInterspersed(logFlags(e, "show"), args)
	if err != nil {
		return err
	}
	dir, i, err := dirIndex(pos)
	if err != nil {
		return err
	}
	b, err := audit.ReadDirEntry(dir, i)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s\n", b)
	return nil
}

func runLogProof(e *env, args []string) error {
	fs := logFlags(e, "proof")
	keyArg := fs.String("key", "", "verify the log with this verifier `key` first")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	dir, i, err := dirIndex(pos)
	if err != nil {
		return err
	}
	var key note.Verifier
	if *keyArg != "" {
		if key, err = loadVerifier(*keyArg); err != nil {
			return usageError("%v", err)
		}
	}
	r, err := audit.ProveDir(dir, key, i)
	if err != nil {
		var ve *audit.VerifyError
		if errors.As(err, &ve) {
			return verifyFailure(e, err, false)
		}
		return err
	}
	_, err = e.stdout.Write(r)
	return err
}

func runLogAppend(ctx context.Context, e *env, args []string) error {
	pos, err := parseInterspersed(logFlags(e, "append"), args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("want DIR")
	}
	l, err := audit.Open(pos[0], cliLogOptions)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(e.stdin)
	for sc.Scan() {
		r, err := l.Append(ctx, &audit.Entry{Kind: audit.KindNote, Time: time.Now(), Message: sc.Text()})
		if err != nil {
			l.Close()
			return err
		}
		fmt.Fprintf(e.stdout, "%d %s\n", r.Index, r.LeafHash)
	}
	if err := sc.Err(); err != nil {
		l.Close()
		return err
	}
	return l.Close()
}

func runLogCheckpoint(e *env, args []string) error {
	fs := logFlags(e, "checkpoint")
	keyFile := fs.String("key", "", "signing key `file` (from rulelock keygen; required)")
	tiles := fs.String("tiles", "", "also update this C2SP tlog-tiles `directory`")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *keyFile == "" {
		return usageError("want DIR and --key KEYFILE")
	}
	s, err := audit.LoadKeyFile(*keyFile)
	if err != nil {
		return err
	}
	l, err := audit.Open(pos[0], cliLogOptions)
	if err != nil {
		return err
	}
	cp, err := audit.NewCheckpointer(l, s, audit.CheckpointOptions{TilesDir: *tiles})
	if err != nil {
		l.Close()
		return err
	}
	msg, err := cp.Checkpoint()
	if err != nil {
		l.Close()
		return err
	}
	if _, err := e.stdout.Write(msg); err != nil {
		l.Close()
		return err
	}
	return l.Close()
}

func runLogReveal(e *env, args []string) error {
	fs := logFlags(e, "reveal")
	data := fs.String("data", "", "the gateway's data `directory` (its log is DATADIR/log; required)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || *data == "" {
		return usageError("want --data DATADIR INDEX PATH")
	}
	i, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || i < 0 {
		return usageError("bad index %q", pos[0])
	}
	dir := filepath.Join(*data, "log")
	if _, err := os.Stat(filepath.Join(*data, "hashes")); err == nil {
		dir = *data // the log directory itself, as log show takes it
	}
	v, err := audit.RevealDir(dir, i, pos[1])
	if errors.Is(err, audit.ErrShredded) {
		return fmt.Errorf("%w (crypto-shredded: the log still verifies, the value cannot be recovered)", err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s\n", v)
	return nil
}
