package audit

import (
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// TreeHash returns the RFC 6962 root hash of the first n entries.
func (l *Log) TreeHash(n int64) (tlog.Hash, error) {
	if err := l.checkSize(n); err != nil {
		return tlog.Hash{}, fmt.Errorf("tree hash: %w", err)
	}
	h, err := tlog.TreeHash(n, l.hashes)
	if err != nil {
		return tlog.Hash{}, fmt.Errorf("tree hash of size %d: %w", n, err)
	}
	return h, nil
}

// InclusionProof proves that entry i is in the tree of the first n entries
// (check it with tlog.CheckRecord).
func (l *Log) InclusionProof(i, n int64) (tlog.RecordProof, error) {
	if err := l.checkSize(n); err != nil || i < 0 || i >= n {
		return nil, fmt.Errorf("inclusion proof of entry %d in tree of size %d: out of range", i, n)
	}
	p, err := tlog.ProveRecord(n, i, l.hashes)
	if err != nil {
		return nil, fmt.Errorf("inclusion proof of entry %d in tree of size %d: %w", i, n, err)
	}
	return p, nil
}

// ConsistencyProof proves that the tree of the first m entries is a prefix
// of the tree of the first n (check it with tlog.CheckTree).
func (l *Log) ConsistencyProof(m, n int64) (tlog.TreeProof, error) {
	if err := l.checkSize(n); err != nil || m < 1 || m > n {
		return nil, fmt.Errorf("consistency proof from size %d to %d: out of range", m, n)
	}
	p, err := tlog.ProveTree(n, m, l.hashes)
	if err != nil {
		return nil, fmt.Errorf("consistency proof from size %d to %d: %w", m, n, err)
	}
	return p, nil
}

func (l *Log) checkSize(n int64) error {
	if size := l.Size(); n < 0 || n > size {
		return fmt.Errorf("size %d out of range [0, %d]", n, size)
	}
	return nil
}
