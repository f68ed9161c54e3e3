package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/fsx"
	"github.com/rulelock/rulelock/internal/hsm"
)

// logConfig is the config's log section.
type logConfig struct {
	Signer logSignerConfig `yaml:"signer"`
}

// logSignerConfig says where the key that signs checkpoints is: the key
// file <data_dir>/log.key by default, or a PKCS#11 token.
type logSignerConfig struct {
	PKCS11 *pkcs11Config `yaml:"pkcs11"`
}

// pkcs11Config names a key on a PKCS#11 token, as the flags of rulelock
// keygen and bundle sign do (--pkcs11-module, --token, --label,
// --pin-file). The key's name is the log's origin.
type pkcs11Config struct {
	Module  string `yaml:"module"`   // path of the PKCS#11 library
	Token   string `yaml:"token"`    // the token's label
	Label   string `yaml:"label"`    // CKA_LABEL of the key pair
	PINFile string `yaml:"pin_file"` // a file holding the user PIN
	PINEnv  string `yaml:"pin_env"`  // or an environment variable holding it
}

func (c *logConfig) validate() error {
	p := c.Signer.PKCS11
	if p == nil {
		return nil
	}
	switch {
	case p.Module == "" || p.Token == "" || p.Label == "":
		return errors.New("log.signer.pkcs11: module, token and label are required")
	case (p.PINFile == "") == (p.PINEnv == ""):
		return errors.New("log.signer.pkcs11: give exactly one of pin_file, pin_env")
	}
	return nil
}

// verifierKeyer is a signer that knows its verifier key: audit.LoadKeyFile's
// and hsm.Signer.
type verifierKeyer interface{ VerifierKey() string }

// logSigner opens the log's signing key: the PKCS#11 key the config names,
// or the key file <data>/log.key. It creates a key file only for a new log
// (no entry, no checkpoint, no log.pub); for any other log a missing key is
// an error, never a new key. Whether the key is the log's key is checked by
// audit.NewCheckpointer and checkLogPub.
func logSigner(e *env, cfg *serveConfig, l *audit.Log) (note.Signer, error) {
	if p := cfg.Log.Signer.PKCS11; p != nil {
		return openPKCS11(e, cfg, p)
	}
	path := filepath.Join(cfg.DataDir, "log.key")
	pubPath := filepath.Join(cfg.DataDir, "log.pub")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		empty, err := l.Empty()
		if err != nil {
			return nil, err
		}
		_, perr := os.Stat(pubPath)
		if !empty || perr == nil {
			return nil, fmt.Errorf("refusing to start: %s is missing, but %s: restore the log's key; "+
				"a new key is made only for a new, empty log (see docs/signing-keys.md)", path, logKeyEvidence(l, pubPath))
		}
		skey, vkey, err := note.GenerateKey(rand.Reader, cfg.Origin)
		if err != nil {
			return nil, err
		}
		if err := writeNewFile(path, []byte(skey+"\n")); err != nil {
			return nil, err
		}
		if err := fsx.WriteFileAtomic(pubPath, []byte(vkey+"\n"), 0o644); err != nil {
			return nil, err
		}
		fmt.Fprintf(e.stderr, "rulelock: created the log signing key %s; its verifier key (also in log.pub):\n%s\n", path, vkey)
	}
	return audit.LoadKeyFile(path)
}

// openPKCS11 opens the log's key on a PKCS#11 token.
func openPKCS11(e *env, cfg *serveConfig, p *pkcs11Config) (*hsm.Signer, error) {
	var pin string
	if p.PINFile != "" {
		var err error
		if pin, err = readPIN(p.PINFile); err != nil {
			return nil, err
		}
	} else if pin = e.getenv(p.PINEnv); pin == "" {
		return nil, fmt.Errorf("log.signer.pkcs11: environment variable %s is empty", p.PINEnv)
	}
	s, err := hsm.Open(hsm.Config{Module: p.Module, Token: p.Token, Label: p.Label, PIN: pin, Name: cfg.Origin})
	if err != nil {
		return nil, fmt.Errorf("log signing key: %w", err)
	}
	fmt.Fprintf(e.stderr, "rulelock: signing checkpoints with PKCS#11 key %q on token %q (%s)\n", p.Label, p.Token, s.VerifierKey())
	return s, nil
}

// logKeyEvidence says what shows that the log has a key already: its
// entries, the key of its latest checkpoint, log.pub.
func logKeyEvidence(l *audit.Log, pubPath string) string {
	var parts []string
	if n := l.Size(); n > 0 {
		parts = append(parts, fmt.Sprintf("the log has %d entries", n))
	}
	if msg, err := l.LatestCheckpoint(); err == nil && msg != nil {
		parts = append(parts, "its latest checkpoint is signed by "+strings.Join(noteSigners(msg), ", "))
	}
	if b, err := os.ReadFile(pubPath); err == nil {
		parts = append(parts, fmt.Sprintf("%s names %s", pubPath, vkeyName(strings.TrimSpace(string(b)))))
	}
	if len(parts) == 0 {
		return "the log is not new"
	}
	return strings.Join(parts, "; ")
}

// noteSigners returns the name+hash of the keys that signed a note.
func noteSigners(msg []byte) []string {
	_, err := note.Open(msg, note.VerifierList())
	var uv *note.UnverifiedNoteError
	if !errors.As(err, &uv) {
		return []string{"(malformed note)"}
	}
	var ids []string
	for _, s := range uv.Note.UnverifiedSigs {
		ids = append(ids, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
	}
	return ids
}

// vkeyName returns the name+hash of a verifier key.
func vkeyName(vkey string) string {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Sprintf("%q (not a verifier key: %v)", vkey, err)
	}
	return fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash())
}

// checkLogPub checks that <data>/log.pub, the published verifier key, is
// the signing key's, and writes it (durably) if it is missing. Run it after
// audit.NewCheckpointer has accepted the key for the log.
func checkLogPub(dataDir string, s note.Signer) error {
	vk, ok := s.(verifierKeyer)
	if !ok {
		return errors.New("log signing key: no verifier key")
	}
	path := filepath.Join(dataDir, "log.pub")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return fsx.WriteFileAtomic(path, []byte(vk.VerifierKey()+"\n"), 0o644)
	}
	if err != nil {
		return err
	}
	if pub := strings.TrimSpace(string(b)); pub != vk.VerifierKey() {
		return fmt.Errorf("refusing to start: the signing key %s is not the published key in %s, %s: "+
			"restore the log's key, or change keys with rulelock log rotate-key (see docs/signing-keys.md)",
			vkeyName(vk.VerifierKey()), path, vkeyName(pub))
	}
	return nil
}
