package main

// auditCommands lists the subcommands of the audit log (keygen, verify, log).
// They are kept in a separate table so that the audit log's CLI can grow
// without touching the policy commands.
func auditCommands() []command {
	return []command{
		{"keygen", "create a signing key (file or PKCS#11 token)", runKeygen},
		{"verify", "verify an audit log or a receipt offline", runVerify},
		{"log", "show entries and receipts of an audit log", runLog},
	}
}
