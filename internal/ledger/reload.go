package ledger

import (
	"strings"

	"github.com/rulelock/rulelock/audit"
)

// NoteReload opens the message of the note entry each accepted reload of
// who may act appends (cmd/rulelock: SIGHUP, rulelock reload):
//
//	reload sha256:<SHA-256 of the config file>: <what changed>
//
// A parked request that the reload ends (its agent removed or without a
// role it had, or its requirement beyond the approvers configured now) is
// denied by a DECISION entry after the note whose State names the same
// digest (DecisionState.Reload).
const NoteReload = "reload"

// ParseReloadNote reads a note entry's message as a reload's; digest is
// "sha256:<hex>". ok is false when it is not one.
func ParseReloadNote(e *audit.Entry) (digest string, ok bool) {
	if e.Kind != audit.KindNote {
		return "", false
	}
	rest, ok := strings.CutPrefix(e.Message, NoteReload+" sha256:")
	if !ok {
		return "", false
	}
	hex, _, ok := strings.Cut(rest, ": ")
	if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
		return "", false
	}
	return "sha256:" + hex, true
}
