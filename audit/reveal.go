package audit

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrShredded is returned by Reveal when the side file no longer holds the
// salt of a commitment (it was deleted, or the value was never recorded).
var ErrShredded = errors.New("sensitive value not available")

// Reveal returns the value of the sensitive field (action, instruction,
// reasoning, result or state) of entry i whose commitment is c, from the
// side file, after checking it opens the commitment.
func (l *Log) Reveal(i int64, field string, c Digest) (string, error) {
	return RevealDir(l.dir, i, field, c)
}

// RevealDir is Reveal on a log directory that is not open.
func RevealDir(dir string, i int64, field string, c Digest) (string, error) {
	f, err := os.Open(filepath.Join(dir, sideFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reveal entry %d %s: %w", i, field, ErrShredded)
	}
	if err != nil {
		return "", fmt.Errorf("reveal entry %d %s: %w", i, field, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var r sideRecord
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.Index != i || r.Field != field || r.HMAC != c {
			continue
		}
		mac := hmac.New(sha256.New, r.Salt)
		mac.Write([]byte(r.Value))
		if hmac.Equal(mac.Sum(nil), c[:]) {
			return r.Value, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reveal entry %d %s: %w", i, field, err)
	}
	return "", fmt.Errorf("reveal entry %d %s: %w", i, field, ErrShredded)
}
