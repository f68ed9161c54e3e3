package passkey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rulelock/rulelock/internal/fsx"
)

// A Store keeps the console's one-time enrolment links in a directory
// beside the log (never in it, and without the log's lock, so that
// `rulelock console enrol` works while the gateway runs):
//
//	links/<hex SHA-256 of the token>.json   {"approver": ..., "expires": ...}
//
// Approvers' passkeys are not kept here: the log is their store (see the
// package doc), and the gateway learns them again from it at start.
// Auditors' passkeys are (AddCredential):
//
//	passkeys/<hex SHA-256 of the COSE key>.json   a Credential
//
// A link token is 32 random bytes (base64url); only its hash is stored, so
// a reader of the directory cannot enrol. A link is single-use: claiming
// it removes its file, and of two concurrent claims only the one whose
// removal succeeds wins. Every write is durable (fsx).
type Store struct {
	Dir string
}

// ErrBadLink is returned for an enrolment link that is unknown, used or
// expired.
var ErrBadLink = errors.New("enrolment link unknown, already used or expired")

type link struct {
	Approver string    `json:"approver"`
	Expires  time.Time `json:"expires"`
}

// CreateLink creates a one-time enrolment link token for approver, valid
// until now+ttl.
func (s Store) CreateLink(approver string, now time.Time, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("create enrolment link: ttl %v", ttl)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("create enrolment link: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	data, _ := json.Marshal(link{Approver: approver, Expires: now.Add(ttl).UTC()})
	dir := filepath.Join(s.Dir, "links")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create enrolment link: %w", err)
	}
	if err := fsx.WriteNewFile(s.linkPath(tok), data, 0o600); err != nil {
		return "", fmt.Errorf("create enrolment link: %w", err)
	}
	return tok, nil
}

func (s Store) linkPath(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return filepath.Join(s.Dir, "links", hex.EncodeToString(h[:])+".json")
}

// ClaimLink uses up the link token and returns its approver. Any failure
// is ErrBadLink (wrapped): unknown, already claimed, expired, malformed.
func (s Store) ClaimLink(tok string, now time.Time) (string, error) {
	if len(tok) != 43 {
		return "", ErrBadLink
	}
	if _, err := decode(tok); err != nil {
		return "", ErrBadLink
	}
	p := s.linkPath(tok)
	data, err := os.ReadFile(p)
	if err != nil {
		return "", ErrBadLink
	}
	if err := os.Remove(p); err != nil {
		return "", ErrBadLink // another claim won
	}
	fsx.SyncDir(filepath.Dir(p))
	var l link
	if err := json.Unmarshal(data, &l); err != nil || l.Approver == "" {
		return "", fmt.Errorf("%w: malformed link file", ErrBadLink)
	}
	if !now.Before(l.Expires) {
		return "", fmt.Errorf("%w: expired at %s", ErrBadLink, l.Expires.Format(time.RFC3339))
	}
	return l.Approver, nil
}

// NoteEnrolledAuditor is the first word of the message of the note entry
// that records an auditor's enrolment: "passkey_enrolled_auditor <id>
// <origin> <credential id> <COSE key>". Auditors sign nothing into the
// log, so their passkeys need no offline check and the log is not their
// store (the Store is); the entry keeps the audit trail.
const NoteEnrolledAuditor = "passkey_enrolled_auditor"

// AuditorEnrolmentNote returns the message of the note entry that logs an
// auditor's enrolment of c.
func AuditorEnrolmentNote(c Credential) string {
	return NoteEnrolledAuditor + strings.TrimPrefix(EnrolmentNote(c), NoteEnrolled)
}

// AddCredential stores an auditor's passkey durably, in
// passkeys/<hex SHA-256 of the COSE key>.json. (Approvers' passkeys are
// not stored here: the log is their store.)
func (s Store) AddCredential(c Credential) error {
	if err := c.Check(); err != nil {
		return err
	}
	dir := filepath.Join(s.Dir, "passkeys")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("store passkey: %w", err)
	}
	data, _ := json.Marshal(c)
	name := strings.TrimPrefix(c.Fingerprint(), "sha256:") + ".json"
	if err := fsx.WriteNewFile(filepath.Join(dir, name), data, 0o600); err != nil {
		return fmt.Errorf("store passkey: %w", err)
	}
	return nil
}

// Credentials returns every stored passkey. A file that does not read as
// a well-formed credential stored under its own name is an error.
func (s Store) Credentials() ([]Credential, error) {
	names, err := filepath.Glob(filepath.Join(s.Dir, "passkeys", "*.json"))
	if err != nil {
		return nil, err
	}
	var out []Credential
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("read passkey: %w", err)
		}
		var c Credential
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("read passkey %s: %w", n, err)
		}
		if err := c.Check(); err != nil {
			return nil, fmt.Errorf("read passkey %s: %w", n, err)
		}
		if filepath.Base(n) != strings.TrimPrefix(c.Fingerprint(), "sha256:")+".json" {
			return nil, fmt.Errorf("read passkey %s: named for another key", n)
		}
		out = append(out, c)
	}
	return out, nil
}
