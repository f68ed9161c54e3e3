module github.com/rulelock/rulelock

go 1.26

require (
	cel.dev/cel-go v0.33.2 // indirect
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/miekg/pkcs11 v1.1.2 // indirect
	github.com/rogpeppe/go-internal v1.15.0 // indirect
	go.yaml.in/yaml/v3 v3.0.6 // indirect
	golang.org/x/mod v0.42.0 // indirect
)
