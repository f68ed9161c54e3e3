package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/internal/fsx"
	"github.com/rulelock/rulelock/internal/hsm"
)

const keygenUsage = `usage: rulelock keygen --name NAME [--out FILE]
       rulelock keygen --name NAME --pkcs11-module PATH --token LABEL --pin-file FILE [--label LABEL]

Creates an Ed25519 key for signing checkpoints and prints its verifier key,
NAME+HASH+KEY, on standard output. NAME is the note key name, usually the
log's origin (for example example.com/log).

With --out (default NAME.key) the private key is written to a new file with
mode 0600; an existing file is never overwritten. With --pkcs11-module the
key pair is generated on the PKCS#11 token instead and never leaves it.

`

// runKeygen implements `rulelock keygen`.
func runKeygen(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), keygenUsage)
		fs.PrintDefaults()
	}
	name := fs.String("name", "", "note key `name` (required)")
	out := fs.String("out", "", "private key `file` to create (default NAME.key)")
	module := fs.String("pkcs11-module", "", "generate the key on a token of this PKCS#11 module (`path`)")
	token := fs.String("token", "", "PKCS#11 token `label`")
	pinFile := fs.String("pin-file", "", "`file` holding the token's user PIN")
	label := fs.String("label", "", "PKCS#11 key `label` (default NAME)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2} // the flag package has printed the error
	}
	switch {
	case fs.NArg() > 0:
		return usageError("unexpected argument %q", fs.Arg(0))
	case *name == "":
		return usageError("--name is required")
	case !validKeyName(*name):
		return usageError("invalid key name %q: it must be non-empty UTF-8 without spaces or '+'", *name)
	}
	if *module == "" {
		if *token != "" || *pinFile != "" || *label != "" {
			return usageError("--token, --pin-file and --label need --pkcs11-module")
		}
		return keygenFile(e, *name, *out)
	}
	switch {
	case *out != "":
		return usageError("--out cannot be used with --pkcs11-module: the private key stays on the token")
	case *token == "" || *pinFile == "":
		return usageError("--pkcs11-module needs --token and --pin-file")
	}
	if *label == "" {
		*label = *name
	}
	return keygenPKCS11(e, hsm.Config{Module: *module, Token: *token, Label: *label, Name: *name}, *pinFile)
}

// keygenFile writes a new software key to path and prints its verifier key.
func keygenFile(e *env, name, path string) error {
	if path == "" {
		path = defaultKeyFile(name)
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	if err := writeNewFile(path, []byte(skey+"\n")); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "rulelock keygen: wrote private key to %s\n", path)
	fmt.Fprintln(e.stdout, vkey)
	return nil
}

// keygenPKCS11 generates a key pair on a token and prints its verifier key.
func keygenPKCS11(e *env, cfg hsm.Config, pinFile string) error {
	pin, err := readPIN(pinFile)
	if err != nil {
		return err
	}
	cfg.PIN = pin
	s, err := hsm.GenerateKey(cfg)
	if err != nil {
		return err
	}
	vkey := s.VerifierKey()
	if err := s.Close(); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "rulelock keygen: generated key %q on token %q\n", cfg.Label, cfg.Token)
	fmt.Fprintln(e.stdout, vkey)
	return nil
}

// readPIN reads a PIN file: the PIN, optionally followed by a newline.
func readPIN(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read pin file: %w", err)
	}
	pin := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if pin == "" {
		return "", fmt.Errorf("read pin file %s: empty", path)
	}
	return pin, nil
}

// writeNewFile creates path with mode 0600 holding data, durably (see
// fsx.WriteNewFile). It refuses to replace an existing file.
func writeNewFile(path string, data []byte) error {
	if err := fsx.WriteNewFile(path, data, 0o600); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("write key file: %s exists; refusing to overwrite it", path)
		}
		return fmt.Errorf("write key file: %w", err)
	}
	return nil
}

// defaultKeyFile is NAME.key with characters unsafe in a file name
// (such as the '/' of an origin) replaced by '_'.
func defaultKeyFile(name string) string {
	safe := strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("._-", r)) {
			return r
		}
		return '_'
	}, name)
	return safe + ".key"
}

// validKeyName reports whether name is a valid note key name.
func validKeyName(name string) bool {
	return name != "" && utf8.ValidString(name) &&
		strings.IndexFunc(name, unicode.IsSpace) < 0 && !strings.Contains(name, "+")
}
