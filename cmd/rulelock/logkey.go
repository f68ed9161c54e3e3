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
	Signer       logSignerConfig  `yaml:"signer"`
	logWitnesses `yaml:",inline"` // witness.go
	// MaxUnsigned: when the oldest entry without a signed checkpoint has
	// waited longer, new actions are refused (checkpoint_overdue) until
	// signing resumes (default 60s; at least twice checkpoint_interval).
	MaxUnsigned duration `yaml:"max_unsigned"`
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
	if err := c.logWitnesses.validate(); err != nil {
		return err
	}
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
// audit.NewCheckpointer has accepted the key for the log; vouched says that
// the key was checked against a checkpoint of the log, which then also
// repairs a log.pub that holds no key at all (emptied by a crash before
// log.pub was written durably).
func checkLogPub(e *env, dataDir string, s note.Signer, vouched bool) error {
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
	pub := strings.TrimSpace(string(b))
	if _, perr := note.NewVerifier(pub); perr != nil && vouched {
		fmt.Fprintf(e.stderr, "rulelock: WARNING: %s holds no verifier key (%v); rewriting it with the key that signed the log's latest checkpoint, %s\n", path, perr, vkeyName(vk.VerifierKey()))
		return fsx.WriteFileAtomic(path, []byte(vk.VerifierKey()+"\n"), 0o644)
	}
	if pub != vk.VerifierKey() {
		return fmt.Errorf("refusing to start: the signing key %s is not the published key in %s, %s: "+
			"restore the log's key, or change keys with rulelock log rotate-key (see docs/signing-keys.md)",
			vkeyName(vk.VerifierKey()), path, vkeyName(pub))
	}
	return nil
}

// runLogRotateKey implements `rulelock log rotate-key`.
func runLogRotateKey(e *env, args []string) error {
	fs := logFlags(e, "rotate-key")
	newArg := fs.String("new", "", "the new key's verifier `key` (NAME+HASH+KEY, as keygen prints it) or a file holding it (required)")
	keyFile := fs.String("key", "", "the current key `file` (default DATA/log.key)")
	module := fs.String("pkcs11-module", "", "the current key is on a token of this PKCS#11 module (`path`)")
	token := fs.String("token", "", "PKCS#11 token `label`")
	pinFile := fs.String("pin-file", "", "`file` holding the token's user PIN")
	label := fs.String("label", "", "PKCS#11 key `label`")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 1 || *newArg == "":
		return usageError("want DATA and --new VKEY")
	case *module != "" && (*keyFile != "" || *token == "" || *pinFile == "" || *label == ""):
		return usageError("--pkcs11-module needs --token, --pin-file and --label, and no --key")
	case *module == "" && (*token != "" || *pinFile != "" || *label != ""):
		return usageError("--token, --pin-file and --label need --pkcs11-module")
	}
	data := pos[0]
	newKey, err := loadVerifierKey(*newArg)
	if err != nil {
		return usageError("--new: %v", err)
	}
	var old note.Signer
	if *module != "" {
		pin, err := readPIN(*pinFile)
		if err != nil {
			return err
		}
		nv, _ := note.NewVerifier(newKey) // checked by loadVerifierKey
		s, err := hsm.Open(hsm.Config{Module: *module, Token: *token, Label: *label, PIN: pin, Name: nv.Name()})
		if err != nil {
			return err
		}
		defer s.Close()
		old = s
	} else {
		if *keyFile == "" {
			*keyFile = filepath.Join(data, "log.key")
		}
		if old, err = audit.LoadKeyFile(*keyFile); err != nil {
			return err
		}
	}
	return rotateKey(e, data, old, newKey)
}

// rotateKey rotates the log in data from old to newKey and publishes the
// new key in data/log.pub. Run again after an interruption, it finishes
// the same rotation.
func rotateKey(e *env, data string, old note.Signer, newKey string) error {
	pubPath := filepath.Join(data, "log.pub")
	pub := ""
	if b, err := os.ReadFile(pubPath); err == nil {
		pub = strings.TrimSpace(string(b))
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	oldKey := old.(verifierKeyer).VerifierKey()
	if pub != "" && pub != oldKey && pub != newKey {
		return fmt.Errorf("%s names %s, neither the current key %s nor the new key %s", pubPath, vkeyName(pub), vkeyName(oldKey), vkeyName(newKey))
	}
	l, err := audit.Open(filepath.Join(data, "log"), cliLogOptions)
	if err != nil {
		return err
	}
	msg, err := audit.RotateKey(l, old, newKey, audit.CheckpointOptions{TilesDir: filepath.Join(data, "tiles")})
	var ke *audit.KeyError
	if errors.As(err, &ke) && ke.Want == vkeyName(newKey) {
		err = nil // rotated already; log.pub may not say so yet
		fmt.Fprintf(e.stderr, "rulelock log rotate-key: the log's key is %s already\n", ke.Want)
	}
	if cerr := l.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := fsx.WriteFileAtomic(pubPath, []byte(newKey+"\n"), 0o644); err != nil {
		return err
	}
	e.stdout.Write(msg)
	fmt.Fprintf(e.stderr, "rulelock log rotate-key: the log's key is now %s (in %s); %s signed its last checkpoint, shown above.\n"+
		"Install the new key before starting the gateway: replace %s with the new key file, or set log.signer.pkcs11 to the new key.\n",
		vkeyName(newKey), pubPath, vkeyName(oldKey), filepath.Join(data, "log.key"))
	return nil
}

// loadVerifierKey takes a verifier key or the name of a file holding one.
func loadVerifierKey(arg string) (string, error) {
	if _, err := note.NewVerifier(arg); err == nil {
		return arg, nil
	}
	b, err := os.ReadFile(arg)
	if err != nil {
		return "", fmt.Errorf("neither a verifier key nor a readable file: %w", err)
	}
	vkey := strings.TrimSpace(string(b))
	if _, err := note.NewVerifier(vkey); err != nil {
		return "", fmt.Errorf("%s: %w", arg, err)
	}
	return vkey, nil
}
