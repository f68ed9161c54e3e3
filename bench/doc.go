// Package bench holds rulelock's benchmarks: rulelock's policy engine side
// by side with OPA evaluating the same rules in Rego, and the audit log.
// It is its own module so that the product does not depend on OPA.
// Run them with `make bench`; docs/benchmarks.md has the numbers.
package bench
