package audit

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// receiptHeader opens a receipt. A receipt is a C2SP tlog-proof whose extra
// data is the entry itself, so that it verifies alone:
//
//	c2sp.org/tlog-proof@v1
//	extra <base64 of the encoded entry>
//	index <decimal index>
//	<base64 inclusion proof hash>
//	...
//	<empty line>
//	<signed checkpoint note>
const receiptHeader = "c2sp.org/tlog-proof@v1"

// FormatReceipt returns the receipt for entry (at index) with an inclusion
// proof against the signed checkpoint note.
func FormatReceipt(entry []byte, index int64, proof tlog.RecordProof, checkpoint []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nextra %s\nindex %d\n", receiptHeader, base64.StdEncoding.EncodeToString(entry), index)
	for _, h := range proof {
		fmt.Fprintf(&b, "%s\n", base64.StdEncoding.EncodeToString(h[:]))
	}
	b.WriteString("\n")
	b.Write(checkpoint)
	return b.Bytes()
}

// ParsedReceipt is a receipt split into its parts by ParseReceipt.
type ParsedReceipt struct {
	Entry      []byte
	Index      int64
	Proof      tlog.RecordProof
	Checkpoint []byte // the signed note
}

// ParseReceipt parses a receipt without verifying it. It refuses a receipt
// over MaxReceiptSize, an entry over MaxEntrySize, an index at or beyond
// MaxTreeSize and a proof longer than any tree of that size needs.
func ParseReceipt(b []byte) (*ParsedReceipt, error) {
	if len(b) > MaxReceiptSize {
		return nil, fmt.Errorf("parse receipt: %d bytes, over the %d-byte limit", len(b), MaxReceiptSize)
	}
	head, cp, ok := strings.Cut(string(b), "\n\n")
	if !ok {
		return nil, errors.New("parse receipt: no checkpoint")
	}
	lines := strings.Split(head, "\n")
	if len(lines) < 3 || lines[0] != receiptHeader {
		return nil, fmt.Errorf("parse receipt: want %q, extra and index lines", receiptHeader)
	}
	r := &ParsedReceipt{Checkpoint: []byte(cp)}
	extra, ok := strings.CutPrefix(lines[1], "extra ")
	if !ok {
		return nil, errors.New("parse receipt: missing extra line with the entry")
	}
	e, err := base64.StdEncoding.Strict().DecodeString(extra)
	if err != nil || len(e) == 0 || len(e) > MaxEntrySize {
		return nil, errors.New("parse receipt: bad entry encoding")
	}
	r.Entry = e
	idx, ok := strings.CutPrefix(lines[2], "index ")
	n, err := strconv.ParseInt(idx, 10, 64)
	if !ok || err != nil || n < 0 || n >= MaxTreeSize || strconv.FormatInt(n, 10) != idx {
		return nil, fmt.Errorf("parse receipt: bad index line %q", lines[2])
	}
	r.Index = n
	if len(lines)-3 > maxProofHashes {
		return nil, fmt.Errorf("parse receipt: %d proof hashes, a tree of at most %d entries needs at most %d", len(lines)-3, int64(MaxTreeSize), maxProofHashes)
	}
	for _, l := range lines[3:] {
		h, err := base64.StdEncoding.Strict().DecodeString(l)
		if err != nil || len(h) != tlog.HashSize {
			return nil, fmt.Errorf("parse receipt: bad proof hash %q", l)
		}
		r.Proof = append(r.Proof, tlog.Hash(h))
	}
	return r, nil
}

// VerifyReceipt checks a receipt alone: the checkpoint's signature by key,
// the inclusion proof of the entry in the checkpoint's tree, and the
// entry's encoding. A failure is a *VerifyError.
func VerifyReceipt(b []byte, key note.Verifier) (*Entry, *ParsedReceipt, error) {
	r, err := ParseReceipt(b)
	if err != nil {
		return nil, nil, &VerifyError{Class: BadProof, Index: -1, Err: err}
	}
	cp, verr := openCheckpoint(r.Checkpoint, key, "receipt checkpoint")
	if verr != nil {
		return nil, nil, verr
	}
	// openCheckpoint bounded cp.Size (ParseCheckpoint) and ParseReceipt
	// the index and the proof: tlog.CheckRecord returns.
	if r.Index >= cp.Size {
		return nil, nil, &VerifyError{Class: BadProof, Index: r.Index, Err: fmt.Errorf("index %d outside tree of size %d", r.Index, cp.Size)}
	}
	if err := tlog.CheckRecord(r.Proof, cp.Size, cp.Root, r.Index, tlog.RecordHash(r.Entry)); err != nil {
		return nil, nil, &VerifyError{Class: BadProof, Index: r.Index, Err: err}
	}
	e, err := DecodeEntry(r.Entry)
	if err != nil {
		return nil, nil, &VerifyError{Class: ModifiedEntry, Index: r.Index, Err: err}
	}
	return e, r, nil
}
