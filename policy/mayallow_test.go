package policy_test

import (
	"testing"
	"testing/fstest"

	"github.com/rulelock/rulelock/policy"
)

func TestMayAllow(t *testing.T) {
	src := `policy "fs" { default: deny }

rule "Reads" {
  precondition: action.type == "fs.read_text_file"
  condition: action.path.startsWith("/sandbox/")
  allow
}

rule "AdminsList" {
  precondition: action.type == "fs.list_directory"
  condition: "admin" in agent.roles
  allow
}

rule "NoWrites" {
  precondition: action.type in ["fs.write_file", "fs.edit_file"]
  deny: "writes are not allowed"
}

rule "WritesAllowed" {
  precondition: action.type == "fs.write_file"
  allow
}

rule "Moves" {
  precondition: action.type == "fs.move_file"
  require_approval {
    approvers: 2
    message: "two people approve a move"
  }
}

rule "ShadowOnly" {
  precondition: action.type == "fs.search_files"
  allow
  mode: shadow
}

rule "NoBots" {
  precondition: action.type == "fs.get_file_info"
  condition: !("bot" in agent.roles)
  deny: "bots may not stat"
}

rule "NoBotsInPrecondition" {
  precondition: action.type == "fs.list_allowed_directories" && "bot" in agent.roles
  deny: "bots may not list"
}

rule "ListAllowed" {
  precondition: action.type == "fs.list_allowed_directories"
  allow
}

rule "Stat" {
  precondition: action.type == "fs.get_file_info"
  allow
}
`
	p, err := policy.Load(fstest.MapFS{"fs.rules": {Data: []byte(src)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	user := policy.Agent{ID: "a", Roles: []string{"user"}}
	admin := policy.Agent{ID: "b", Roles: []string{"admin"}}
	bot := policy.Agent{ID: "c", Roles: []string{"bot"}}
	for _, tc := range []struct {
		typ   string
		agent policy.Agent
		want  bool
	}{
		{"fs.read_text_file", user, true},  // allowed for some paths
		{"fs.list_directory", user, false}, // the allow rule needs a role the agent lacks
		{"fs.list_directory", admin, true}, //
		{"fs.write_file", admin, false},    // an unconditional deny beats the allow rule
		{"fs.edit_file", admin, false},     //
		{"fs.move_file", user, true},       // approval may be granted
		{"fs.search_files", admin, false},  // a shadow allow is never enforced
		{"fs.unknown_tool", admin, false},  // default deny, no rule
		{"fs.get_file_info", user, true},   //
		{"fs.get_file_info", bot, false},   // the deny's precondition holds for bots whatever the action
		{"fs.get_file_info", policy.Agent{ID: "d"}, true},
		// Conservative: action.type is unknown to the partial evaluation, so
		// a precondition that also tests it never counts as holding.
		{"fs.list_allowed_directories", bot, true},
	} {
		if got := p.MayAllow(tc.typ, tc.agent); got != tc.want {
			t.Errorf("MayAllow(%s, %v) = %v, want %v", tc.typ, tc.agent.Roles, got, tc.want)
		}
	}

	// A default-allow policy lists everything but the unconditionally denied.
	q, err := policy.Load(fstest.MapFS{"a.rules": {Data: []byte(`policy "p" { default: allow }
rule "NoDeletes" {
  precondition: action.type == "delete"
  deny: "never"
}
rule "Big" {
  precondition: action.type == "transfer"
  condition: action.amount <= 10
  deny: "too big"
}
`)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for typ, want := range map[string]bool{"delete": false, "transfer": true, "read": true} {
		if got := q.MayAllow(typ, user); got != want {
			t.Errorf("default allow: MayAllow(%s) = %v, want %v", typ, got, want)
		}
	}
}
