package httpapi

import "github.com/rulelock/rulelock/policy"

// AgentAuthenticator returns a lookup of agents by bearer token, for other
// front ends (the MCP proxy). Approver tokens never act as agents.
func AgentAuthenticator(tokens []Token) func(token string) (policy.Agent, bool) {
	byHash := make(map[[32]byte]policy.Agent, len(tokens))
	for _, t := range tokens {
		if !t.Approver {
			byHash[t.SHA256] = t.Agent
		}
	}
	return func(token string) (policy.Agent, bool) {
		if token == "" {
			return policy.Agent{}, false
		}
		a, ok := byHash[HashToken(token)]
		return a, ok
	}
}
