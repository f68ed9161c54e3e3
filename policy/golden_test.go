package policy_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rogpeppe/go-internal/txtar"

	"github.com/rulelock/rulelock/policy"
)

var update = flag.Bool("update", false, "rewrite the want sections of testdata/eval/*.txtar")

// golden is the part of a decision the golden files pin down.
type golden struct {
	Decision string       `json:"decision"`
	Reason   string       `json:"reason"`
	Rules    []goldenRule `json:"rules"`
	Errors   []string     `json:"errors"`
	Approval *struct {
		Approvers int      `json:"approvers"`
		Groups    []string `json:"groups,omitempty"`
		Within    string   `json:"within,omitempty"`
	} `json:"approval,omitempty"`
}

type goldenRule struct {
	Name    string `json:"name"`
	Outcome string `json:"outcome"`
	Shadow  bool   `json:"shadow,omitempty"`
	Error   bool   `json:"error,omitempty"`
}

// TestGolden evaluates each testdata/eval/*.txtar: a policy, one request, and
// the decision wanted. The archive's comment says what the case proves.
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/eval/*.txtar")
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if len(strings.TrimSpace(string(ar.Comment))) == 0 {
				t.Fatalf("%s: the archive must open with a line saying what it proves", file)
			}
			var srcs []policy.Source
			var reqData, wantData []byte
			wantIdx := -1
			for i, f := range ar.Files {
				switch {
				case f.Name == "request.json":
					reqData = f.Data
				case f.Name == "want.json":
					wantData, wantIdx = f.Data, i
				default:
					srcs = append(srcs, policy.Source{Name: f.Name, Data: f.Data})
				}
			}
			p, err := policy.FromSources(srcs, policy.Options{})
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			req, err := policy.DecodeRequest(reqData)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			got := toGolden(p.Evaluate(req))
			if *update {
				b, _ := json.MarshalIndent(got, "", "  ")
				b = append(b, '\n')
				if wantIdx < 0 {
					ar.Files = append(ar.Files, txtar.File{Name: "want.json", Data: b})
				} else {
					ar.Files[wantIdx].Data = b
				}
				if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			var want golden
			if err := json.Unmarshal(wantData, &want); err != nil {
				t.Fatalf("want.json: %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("decision differs (-want +got):\n%s", diff)
			}
		})
	}
}

func toGolden(d *policy.Decision) golden {
	g := golden{Decision: string(d.Decision), Reason: d.Reason, Rules: []goldenRule{}, Errors: []string{}}
	for _, r := range d.Rules {
		g.Rules = append(g.Rules, goldenRule{Name: r.Name, Outcome: string(r.Outcome), Shadow: r.Shadow, Error: r.Error != ""})
	}
	for _, e := range d.Errors {
		g.Errors = append(g.Errors, e.Code)
	}
	if d.Approval != nil {
		g.Approval = &struct {
			Approvers int      `json:"approvers"`
			Groups    []string `json:"groups,omitempty"`
			Within    string   `json:"within,omitempty"`
		}{d.Approval.Approvers, d.Approval.Groups, d.Approval.Within}
	}
	return g
}
