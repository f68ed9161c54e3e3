// Package approval holds requests that a policy parked for human approval
// and decides, exactly once, when each has its quorum.
//
// A require_approval decision parks the request (Manager.Park) with the
// policy's requirements: for each rule, how many approvers, from which
// groups, within what time. Approvers are named humans, each with an
// Ed25519 note key. Each one signs a Statement binding their verdict to
// one request: its id, the SHA-256 of its canonical action, the digest of
// the policy that parked it, and its expiry. The signed statement is a
// C2SP signed note (golang.org/x/mod/sumdb/note), so the audit log that
// stores it proves who approved what:
//
//	rulelock approval v1
//	request req-42
//	action sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//	policy sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
//	expires 2026-11-22T14:00:00Z
//	verdict approve
//
//	— alice@example.com PbuzxSLMCJxc3MmKTNs7LwzKvbJ2D+YUG3PR7Y5aTAYXF9Jwvykt8w7O7dW4bsNmRrYRjUMlQKG7HMOqLaR3d81n3g4=
//
// A rejection has verdict reject and one more line, reason <text>.
// ParseStatement accepts only this canonical form.
//
// # Quorum
//
// Manager.Approve accepts a signed statement when its signature verifies
// under a configured approver's key; it names exactly this request, action,
// policy and expiry; it arrives before the expiry; its approver is not the
// requesting agent, belongs to a group one of the requirements names (or a
// requirement names none), and has not approved this request before. The
// request is approved when every requirement counts enough distinct
// approvers among those accepted; an approver in several groups counts
// toward every requirement they are eligible for. The approval that
// completes the quorum, and only that one, returns Ready: its caller
// executes the request and calls MarkExecuted. After that point the
// request accepts nothing, so no approval is counted twice and no request
// runs twice. One accepted rejection (Manager.Reject) ends the request;
// Manager.Expire ends those whose time ran out.
//
// Every refusal is a *RefusalError wrapping a sentinel with a stable code
// (ErrSelfApproval is "self_approval", and so on) that the HTTP API
// returns as its error code.
//
// # Durability
//
// The package does no I/O. Each change of state is an Event that the
// Manager hands to its Recorder, under its lock, before the change takes
// effect: the gateway appends it to the audit log. After a restart
// Manager.Restore replays the logged events to rebuild the same state,
// except that a request approved but never marked executed is not
// executable again; it is returned for the caller to reconcile.
//
// # Example
//
//	reg, err := approval.NewRegistry([]approval.Approver{
//		{ID: "alice@example.com", Groups: []string{"treasury"}, Key: aliceVerifierKey},
//		{ID: "bob@example.com", Groups: []string{"treasury"}, Key: bobVerifierKey},
//	})
//	m := approval.New(reg, approval.Options{Recorder: logRecorder})
//	req, err := m.Park(approval.Request{
//		ID: "req-42", Agent: "agent-7", Action: action.Hash, Policy: pol.Digest(),
//		Requirements: decision.Approval.Requirements, // two from treasury within 4h
//	})
//	// On alice's machine: rulelock approve req-42 --key alice.key, which does
//	signed, err := approval.Sign(req.Statement(approval.Approve, ""), aliceSigner)
//	// In the gateway:
//	res, err := m.Approve("req-42", signed) // res.Ready == false: one of two
//	res, err = m.Approve("req-42", bobSigned) // res.Ready == true: execute now
//	err = m.MarkExecuted("req-42")
package approval
