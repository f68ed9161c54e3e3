package httpapi

import "sync/atomic"

// TokenSet is the tokens the API accepts, indexed by hash, replaced whole
// by Set (a reload of the configuration): a request is authenticated
// against the set before a reload or the set after it, never a mix. A
// hash listed twice authenticates no one.
type TokenSet struct {
	m atomic.Pointer[map[[32]byte]*Token]
}

// NewTokenSet returns the set of ts.
func NewTokenSet(ts []Token) *TokenSet {
	s := &TokenSet{}
	s.Set(ts)
	return s
}

// Set replaces the tokens with ts.
func (s *TokenSet) Set(ts []Token) {
	m := make(map[[32]byte]*Token, len(ts))
	for i := range ts {
		t := ts[i]
		if _, dup := m[t.SHA256]; dup {
			m[t.SHA256] = nil
			continue
		}
		m[t.SHA256] = &t
	}
	s.m.Store(&m)
}

// lookup returns the token whose SHA-256 is h, nil for none.
func (s *TokenSet) lookup(h [32]byte) *Token { return (*s.m.Load())[h] }

// ID returns who a bearer token authenticates (any role), for the console.
func (s *TokenSet) ID(token string) (string, bool) {
	t := s.lookup(HashToken(token))
	if t == nil {
		return "", false
	}
	return t.Agent.ID, true
}
