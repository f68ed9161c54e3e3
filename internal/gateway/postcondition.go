package gateway

import (
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// postconditionResult is what a policy's postconditions see as result: the
// outcome's body, decoded, which is
//
//   - for an HTTPExecutor, the upstream's reply body, when it is JSON and
//     no larger than MaxBody;
//   - for the MCP proxy's executor, the tool's result as it records it:
//     {"content": [...], "structuredContent": ...}, up to 64 KiB;
//   - for an outcome the agent reports, the result it reported.
//
// An outcome without a body, or with one that is not strict JSON, has no
// result (policy.NoResult): every postcondition that reads it fails, so a
// reply nobody can read satisfies none. The HTTP status is not part of
// result: only an outcome with status ok (a 2xx reply) is checked at all.
func postconditionResult(out Outcome) any {
	if len(out.Body) == 0 {
		return policy.NoResult{Reason: "the outcome has no JSON body (none, not JSON, or larger than the executor keeps)"}
	}
	v, err := strictjson.Decode(out.Body, strictjson.Limits{MaxBytes: len(out.Body)})
	if err != nil {
		return policy.NoResult{Reason: "the outcome's body is not JSON: " + err.Error()}
	}
	return v
}

// verdicts returns the postcondition verdicts on r's outcome.
func (r *record) verdicts() []policy.Verdict {
	if r.postconditions == nil {
		return nil
	}
	return *r.postconditions
}
