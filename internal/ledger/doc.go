// Package ledger is the typed vocabulary of rulelock's log entries and the
// one fold from those entries to the state the gateway decides with.
//
// State is a fold of the log:
// what stateful rules read (per-scope series for count, total and
// succeeded, session histories) and the lifecycle of each request are
// derived from audit entries by this package alone. A live decision runs
// Begin, policy evaluation with the Txn as the policy.State, Decided and
// Unlock; an outcome is Outcome; a gateway that restarts, `rulelock replay`
// and `rulelock verify --replay` feed the recorded entries through Decode
// and Apply. Because all of them call the same functions, a replay gets
// the recorded decisions by construction.
//
// The vocabulary (Decision, Verb, Status, Reason, Consequence) is the one
// set of named values every package writes into and reads from entries;
// none is recognised by the text of a message.
//
// The ledger keeps only what rules can read (Install learns it from the
// compiled policy), for Options.Retention, within Options.Budget bytes;
// instructions, reasoning and payloads stay in the log.
package ledger
