package audit

import (
	"context"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

func TestProofs(t *testing.T) {
	l := openTest(t, t.TempDir(), Options{})
	defer l.Close()
	var leaves []tlog.Hash
	for i := range 40 {
		r, err := l.Append(context.Background(), testEntry(i))
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, r.LeafHash)
	}
	for _, n := range []int64{1, 7, 32, 40} {
		root, err := l.TreeHash(n)
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range []int64{0, n / 2, n - 1} {
			p, err := l.InclusionProof(i, n)
			if err != nil {
				t.Fatal(err)
			}
			if err := tlog.CheckRecord(p, n, root, i, leaves[i]); err != nil {
				t.Fatalf("inclusion of %d in %d: %v", i, n, err)
			}
		}
		for _, m := range []int64{1, n / 2, n} {
			if m == 0 {
				continue
			}
			old, _ := l.TreeHash(m)
			p, err := l.ConsistencyProof(m, n)
			if err != nil {
				t.Fatal(err)
			}
			if err := tlog.CheckTree(p, n, root, m, old); err != nil {
				t.Fatalf("consistency %d→%d: %v", m, n, err)
			}
		}
	}
	for _, bad := range [][2]int64{{-1, 5}, {5, 5}, {0, 41}} {
		if _, err := l.InclusionProof(bad[0], bad[1]); err == nil {
			t.Errorf("InclusionProof(%d, %d) succeeded", bad[0], bad[1])
		}
	}
	if _, err := l.ConsistencyProof(0, 5); err == nil {
		t.Error("ConsistencyProof(0, 5) succeeded")
	}
	if _, err := l.TreeHash(41); err == nil {
		t.Error("TreeHash(41) succeeded")
	}
}
