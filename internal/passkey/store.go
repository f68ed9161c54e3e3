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
	"time"

	"github.com/rulelock/rulelock/internal/fsx"
)

// A Store keeps the console's one-time enrolment links in a directory
// beside the log (never in it, and without the log's lock, so that
// `rulelock console enrol` works while the gateway runs):
//
//	links/<hex SHA-256 of the token>.json   {"approver": ..., "expires": ...}
//
// Enrolled passkeys are not kept here: the log is their store (see the
// package doc), and the gateway learns them again from it at start.
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
