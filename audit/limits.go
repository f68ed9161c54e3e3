package audit

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// The verifier's bounds. Every size, index and count read from a
// checkpoint, a receipt or a tiles directory is checked against them before
// it reaches golang.org/x/mod/sumdb/tlog or an allocation: tlog's internal
// maxpow2 never returns for a tree larger than 2^62 (CheckRecord,
// CheckTree, ProveRecord, ProveTree, TreeHash and TileHashReader all call
// it), and a file that never ends (a symlink to /dev/zero) must not be read
// to its end.
const (
	// MaxTreeSize is the largest tree size the verifier accepts: 2^62 - 1
	// entries. A checkpoint of a larger tree, or an index at or beyond it,
	// is malformed.
	MaxTreeSize = 1<<62 - 1

	// maxProofHashes is the longest inclusion or consistency proof of a
	// tree of at most MaxTreeSize entries: one hash per level, and a tree
	// of fewer than 2^62 leaves has at most 62 levels above them.
	maxProofHashes = 62

	// MaxCheckpointSize bounds a signed checkpoint note: its text and up
	// to 100 signature lines (note.Open refuses more).
	MaxCheckpointSize = 64 << 10

	// MaxReceiptSize bounds the receipts ParseReceipt accepts.
	MaxReceiptSize = 1 << 20

	// maxTileSize is the size of a full hash tile; maxBundleSize that of a
	// full entry bundle of entries of at most MaxEntrySize bytes.
	maxTileSize   = tlog.HashSize << tileHeight
	maxBundleSize = (2 + MaxEntrySize) << tileHeight
)

// errTooLarge is returned by readFileMax for a file over its bound.
var errTooLarge = errors.New("file too large")

// readFileMax reads the file name, at most max bytes of it: a longer file
// (or one that never ends) is errTooLarge, never read to its end.
func readFileMax(name string, max int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: %w (over %d bytes)", name, errTooLarge, max)
	}
	return b, nil
}

// checkSignatureLines refuses a note with two signature lines by the same
// key (name and key hash). note.Open verifies the first and skips the
// others without verifying them, so a note carrying a valid signature and
// a bad one by the same key would open: a signed artefact has exactly one
// signature per key, and every one of them must verify. It also refuses a
// note over MaxCheckpointSize. Malformed notes are left to note.Open.
func checkSignatureLines(msg []byte) error {
	if len(msg) > MaxCheckpointSize {
		return fmt.Errorf("note of %d bytes, over the %d-byte limit", len(msg), MaxCheckpointSize)
	}
	i := bytes.LastIndex(msg, []byte("\n\n"))
	if i < 0 {
		return nil
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(string(msg[i+2:]), "\n") {
		key, ok := signatureKey(line)
		if !ok {
			continue
		}
		if seen[key] {
			return fmt.Errorf("two signatures by key %s", key)
		}
		seen[key] = true
	}
	return nil
}

// signatureKey returns the name and key hash of a note signature line
// ("— NAME BASE64", the signature opening with the 4-byte key hash).
func signatureKey(line string) (string, bool) {
	rest, ok := strings.CutPrefix(line, "\u2014 ")
	if !ok {
		return "", false
	}
	name, b64, _ := strings.Cut(rest, " ")
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(sig) < 4 {
		return "", false
	}
	return fmt.Sprintf("%s+%08x", name, binary.BigEndian.Uint32(sig)), true
}
