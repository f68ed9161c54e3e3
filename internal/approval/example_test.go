package approval_test

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/policy"
)

// A transfer needs two treasury members. Alice approves, tries again, Bob
// completes the quorum, and only his call is told to execute.
func Example() {
	// Each approver has a note key, as rulelock keygen makes.
	aliceKey, aliceVerifier, _ := note.GenerateKey(rand.Reader, "alice")
	bobKey, bobVerifier, _ := note.GenerateKey(rand.Reader, "bob")
	reg, err := approval.NewRegistry([]approval.Approver{
		{ID: "alice", Groups: []string{"treasury"}, Key: aliceVerifier},
		{ID: "bob", Groups: []string{"treasury"}, Key: bobVerifier},
	})
	if err != nil {
		log.Fatal(err)
	}
	m := approval.New(reg, approval.Options{
		Now: func() time.Time { return time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC) },
		Recorder: approval.RecorderFunc(func(ev approval.Event) error {
			fmt.Println(strings.TrimSpace(fmt.Sprint("log: ", ev.Kind, " ", ev.Request, " ", ev.Approver))) // the gateway appends to the audit log
			return nil
		}),
	})

	// The policy decided require_approval: park the request.
	req, err := m.Park(approval.Request{
		ID:     "req-42",
		Agent:  "agent-7",
		Action: sha256.Sum256([]byte(`{"amount":20000,"to":"acct-9","type":"transfer"}`)),
		Policy: "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
		Requirements: []policy.Requirement{
			{Rule: "TwoPersonTreasury", Approvers: 2, Groups: []string{"treasury"}, Within: 4 * time.Hour},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	st := req.Statement(approval.Approve, "")
	fmt.Printf("%s", st.Marshal())

	// Each approver signs the statement with their own key.
	sign := func(key string) []byte {
		signer, _ := note.NewSigner(key)
		signed, err := approval.Sign(st, signer)
		if err != nil {
			log.Fatal(err)
		}
		return signed
	}
	res, err := m.Approve("req-42", sign(aliceKey))
	fmt.Println("alice:", res.Ready, err)
	_, err = m.Approve("req-42", sign(aliceKey))
	fmt.Println("alice again:", approval.Code(err))
	res, err = m.Approve("req-42", sign(bobKey))
	fmt.Println("bob:", res.Ready, err)
	if res.Ready {
		// Execute the action here, record its outcome, then:
		if err := m.MarkExecuted("req-42"); err != nil {
			log.Fatal(err)
		}
	}
	r, _ := m.Get("req-42")
	fmt.Println(r.State)

	// Output:
	// log: parked req-42
	// rulelock approval v1
	// request req-42
	// action sha256:bee5edd4d3dedc8e686f095ee6c5d40e26097c355c55fc1bb0f4c65b585ba321
	// policy sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
	// expires 2026-11-22T14:00:00Z
	// verdict approve
	// log: approval req-42 alice
	// alice: false <nil>
	// alice again: duplicate_approver
	// log: approval req-42 bob
	// bob: true <nil>
	// log: executed req-42
	// executed
}
