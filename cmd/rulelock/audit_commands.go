package main

// auditCommands lists the subcommands of the audit log (keygen, verify, log).
// They are kept in a separate table so that the audit log's CLI can grow
// without touching the policy commands.
func auditCommands() []command {
	return []command{
		{"keygen", "create a signing key (file or PKCS#11 token)", runKeygen},
	}
}
