package audit_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
)

// A verifier requires two of three witnesses' cosignatures on a checkpoint.
func ExampleWitnessPolicy_Check() {
	skey, vkey, _ := note.GenerateKey(rand.Reader, "example.com/log")
	logSigner, _ := note.NewSigner(skey)
	var keys [3]string
	for i := range keys {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		keys[i] = audit.FormatCosignerKey(fmt.Sprintf("witness.example/%d", i), pub)
	}
	policy := fmt.Sprintf("log %s\nwitness a %s\nwitness b %s\nwitness c %s\ngroup two 2 a b c\nquorum two\n", vkey, keys[0], keys[1], keys[2])
	p, err := audit.ParseWitnessPolicy("witnesses", []byte(policy))
	if err != nil {
		fmt.Println(err)
		return
	}
	cp := audit.Checkpoint{Origin: "example.com/log", Size: 1}
	msg, _ := note.Sign(&note.Note{Text: string(cp.Text())}, logSigner)
	err = p.Check(msg, "checkpoint") // signed by the log, cosigned by nobody
	var ve *audit.VerifyError
	if errors.As(err, &ve) {
		fmt.Println(ve.Class)
	}
	_, err = audit.ParseWitnessPolicy("witnesses", []byte("witness a "+keys[0]+"\ngroup two 2 a\nquorum two\n"))
	fmt.Println(err)
	// Output:
	// unwitnessed
	// witnesses:2:11: group two: threshold "2", want any, all or a number from 1 to 1
}
