// Package review shows a parked request to the human who must approve or
// reject it, in a form the request itself cannot disguise.
//
// Everything in a parked request but its id, hash and times comes from the
// agent or the upstream payload, and may be hostile: an instruction holding
// "\r\x1b[1A\x1b[2K  action: {\"amount\":200,...}" repaints the terminal
// so that a transfer of 20000 looks like one of 200, and a payee holding
// U+202E (RIGHT-TO-LEFT OVERRIDE) is displayed reversed. A review therefore:
//
//   - escapes every string it shows (Escape): control characters (C0,
//     DEL, C1), bidi controls, zero-width and other format characters,
//     Tag characters, variation selectors, separators, odd spaces,
//     private-use and unassigned code points become visible escapes such
//     as \x1b and \u{202E}, by Unicode class rather than from a list; the
//     escaping is reversible, so two different payees never look alike;
//   - shows the canonical action whole, one leaf per line with its path,
//     keys sorted, numbers exactly as the canonical JSON writes them, and
//     refuses to show (and says so) an action that is not one strict JSON
//     object or does not hash to the action the request names;
//   - cuts nothing;
//   - labels the agent's instruction and reasoning as its unverified claims,
//     in a block whose every line is prefixed, so they cannot pose as the
//     gateway's own lines;
//   - lists the rules that fired, the approvals so far, who is still
//     needed, and the time left.
//
// New builds a Review, whose fields are all escaped strings for a
// template (html/template escapes them again for HTML, harmlessly); Write
// prints it for a terminal:
//
//	request req-42  agent agent-7  pending
//	  expires 2026-11-22T14:00:00Z (3h59m0s left)
//	  action sha256:c4c4…6550, every field (strings in quotes, hidden characters as \x.. or \u{..}):
//	    amount = 20000
//	    to = "acct-\u{202E}1-tcca"
//	    type = "transfer"
//	  rules that fired:
//	    NoHighValueTransfers (require_approval): Transfers over $10,000 require human approval
//	  approvals so far: 1
//	    alice@example.com at 2026-11-22T10:01:00Z
//	  needs 2 from treasury (rule NoHighValueTransfers): 1 more
//	  agent's instruction (unverified, the agent's claim):
//	    | Pay invoice 1234\r\x1b[1A\x1b[2K  action: {"amount":200,"to":"acct-1"}
//
// (the package Example, in full). docs/approvals.md describes the escapes
// for approvers.
package review
