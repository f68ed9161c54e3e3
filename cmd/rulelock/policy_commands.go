package main

// policyCommands lists the subcommands of the policy language
// (check, fmt, eval, test).
func policyCommands() []command {
	return nil
}
