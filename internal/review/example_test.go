package review_test

import (
	"crypto/sha256"
	"html/template"
	"os"
	"time"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/review"
	"github.com/rulelock/rulelock/policy"
)

// exampleRequest is the spoofing attempt of issue 16 in small: the
// instruction repaints the line above, the payee reads reversed.
func exampleRequest() review.Request {
	action := []byte("{\"amount\":20000,\"to\":\"acct-\u202e1-tcca\",\"type\":\"transfer\"}")
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	return review.Request{
		Parked: approval.Request{
			ID: "req-42", Agent: "agent-7", Action: sha256.Sum256(action), State: approval.Pending,
			Requirements: []policy.Requirement{{Rule: "NoHighValueTransfers", Approvers: 2, Groups: []string{"treasury"}}},
			Approvals:    []approval.Vote{{Approver: "alice@example.com", Time: t0.Add(time.Minute)}},
			Created:      t0, Expires: t0.Add(4 * time.Hour),
		},
		Action:      action,
		Instruction: "Pay invoice 1234\r\x1b[1A\x1b[2K  action: {\"amount\":200,\"to\":\"acct-1\"}",
		Rules:       []policy.FiredRule{{Name: "NoHighValueTransfers", Outcome: policy.OutcomeRequireApproval, Message: "Transfers over $10,000 require human approval"}},
		StillNeeded: []int{1},
	}
}

func Example() {
	now := time.Date(2026, 11, 22, 10, 1, 0, 0, time.UTC)
	review.New(exampleRequest(), now).Write(os.Stdout)
	// Output:
	// request req-42  agent agent-7  pending
	//   expires 2026-11-22T14:00:00Z (3h59m0s left)
	//   action sha256:c4c49528ed29509611faed939328ad4614b2c1cda9c30ff4f7ea0ae80d196550, every field (strings in quotes, hidden characters as \x.. or \u{..}):
	//     amount = 20000
	//     to = "acct-\u{202E}1-tcca"
	//     type = "transfer"
	//   rules that fired:
	//     NoHighValueTransfers (require_approval): Transfers over $10,000 require human approval
	//   approvals so far: 1
	//     alice@example.com at 2026-11-22T10:01:00Z
	//   needs 2 from treasury (rule NoHighValueTransfers): 1 more
	//   agent's instruction (unverified, the agent's claim):
	//     | Pay invoice 1234\r\x1b[1A\x1b[2K  action: {"amount":200,"to":"acct-1"}
}

// A Review's fields are escaped strings, so a console template shows them
// as they are; html/template escapes them once more for HTML.
func Example_template() {
	t := template.Must(template.New("").Parse(`<dl>{{range .Fields}}<dt>{{.Path}}</dt><dd>{{.Value}}</dd>{{end}}</dl>
<blockquote class="claim">{{range .Instruction.Lines}}{{.}}<br>{{end}}</blockquote>
`))
	t.Execute(os.Stdout, review.New(exampleRequest(), time.Time{}))
	// Output:
	// <dl><dt>amount</dt><dd>20000</dd><dt>to</dt><dd>&#34;acct-\u{202E}1-tcca&#34;</dd><dt>type</dt><dd>&#34;transfer&#34;</dd></dl>
	// <blockquote class="claim">Pay invoice 1234\r\x1b[1A\x1b[2K  action: {&#34;amount&#34;:200,&#34;to&#34;:&#34;acct-1&#34;}<br></blockquote>
}
