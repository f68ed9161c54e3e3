package approval

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// TestRegistryOneKeyTwoApprovers: two approvers with one public key are
// refused: the one private key could sign as both and meet a two-person
// quorum alone.
func TestRegistryOneKeyTwoApprovers(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var as []Approver
	for _, id := range []string{"alice", "bob"} {
		vkey, err := note.NewEd25519VerifierKey(id, pub)
		if err != nil {
			t.Fatal(err)
		}
		as = append(as, Approver{ID: id, Groups: []string{"treasury"}, Key: vkey})
	}
	_, err = NewRegistry(as)
	if err == nil || !strings.Contains(err.Error(), `the same public key as approver "alice"`) {
		t.Fatalf("NewRegistry: got %v, want the same public key refused", err)
	}
}
