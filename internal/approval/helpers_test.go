package approval

import (
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/policy"
)

// The cast: treasury members, a risk officer, an approver who shares the
// requesting agent's id, and mallory, whose key no registry lists.
var cast = []struct {
	id     string
	groups []string
}{
	{"alice", []string{"treasury"}},
	{"bob", []string{"treasury"}},
	{"carol", []string{"treasury", "risk"}},
	{"dave", []string{"risk"}},
	{"erin", []string{"treasury"}},
	{"frank", []string{"treasury"}},
	{"agent-7", []string{"treasury"}},
}

// keys holds a signer for every member of the cast and for mallory,
// generated once per test binary.
var keys = sync.OnceValue(func() map[string]struct {
	signer note.Signer
	vkey   string
} {
	ks := make(map[string]struct {
		signer note.Signer
		vkey   string
	})
	names := []string{"mallory"}
	for _, c := range cast {
		names = append(names, c.id)
	}
	for _, n := range names {
		skey, vkey, err := note.GenerateKey(rand.Reader, n)
		if err != nil {
			panic(err)
		}
		s, err := note.NewSigner(skey)
		if err != nil {
			panic(err)
		}
		ks[n] = struct {
			signer note.Signer
			vkey   string
		}{s, vkey}
	}
	return ks
})

func testRegistry(t testing.TB) *Registry {
	t.Helper()
	var as []Approver
	for _, c := range cast {
		as = append(as, Approver{ID: c.id, Groups: c.groups, Key: keys()[c.id].vkey})
	}
	reg, err := NewRegistry(as)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

var (
	testAction = sha256.Sum256([]byte(`{"amount":20000,"to":"acct-9","type":"transfer"}`))
	testPolicy = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
	t0         = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
)

// twoTreasury is the payments example's two-person rule.
var twoTreasury = []policy.Requirement{{Rule: "TwoPersonTreasury", Approvers: 2, Groups: []string{"treasury"}, Within: 4 * time.Hour}}

func newRequest(id string, reqs ...policy.Requirement) Request {
	if len(reqs) == 0 {
		reqs = twoTreasury
	}
	return Request{ID: id, Agent: "agent-7", Action: testAction, Policy: testPolicy, Requirements: reqs}
}

// clock is a settable clock for tests that do not need synctest.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

// sign signs st as approver name.
func sign(t testing.TB, name string, st Statement) []byte {
	t.Helper()
	b, err := Sign(st, keys()[name].signer)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func approve(t testing.TB, name string, r Request) []byte {
	t.Helper()
	return sign(t, name, r.Statement(Approve, ""))
}

func reject(t testing.TB, name string, r Request, reason string) []byte {
	t.Helper()
	return sign(t, name, r.Statement(Reject, reason))
}

func mustPark(t testing.TB, m *Manager, r Request) Request {
	t.Helper()
	p, err := m.Park(r)
	if err != nil {
		t.Fatalf("Park(%s): %v", r.ID, err)
	}
	return p
}
