package main

import (
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/policy"
)

// serveConfig is the gateway's configuration file (YAML). Unknown keys are
// errors. See examples/rulelock.yaml for an annotated example.
type serveConfig struct {
	Listen             string                    `yaml:"listen"`
	TLS                tlsConfig                 `yaml:"tls"`
	DataDir            string                    `yaml:"data_dir"`
	Policy             string                    `yaml:"policy"` // development mode: a policy directory
	Bundle             string                    `yaml:"bundle"` // a signed bundle directory (rulelock bundle build)
	Trust              string                    `yaml:"trust"`  // the trust file: the signers' keys and the threshold
	Origin             string                    `yaml:"origin"`
	CheckpointInterval duration                  `yaml:"checkpoint_interval"`
	Agents             []agentConfig             `yaml:"agents"`
	Approvers          []approverConfig          `yaml:"approvers"`
	Auditors           []auditorConfig           `yaml:"auditors"`
	Executors          map[string]executorConfig `yaml:"executors"`
	Limits             limitsConfig              `yaml:"limits"`
	MCP                mcpConfig                 `yaml:"mcp"`
	Log                logConfig                 `yaml:"log"`           // signing key (logkey.go), witnesses (witness.go)
	Notifications      notificationsConfig       `yaml:"notifications"` // webhooks per approver group (notifyconfig.go)
	Export             *exportConfig             `yaml:"export"`        // stream the log to a SIEM (exportcmd.go)
	Console            consoleConfig             `yaml:"console"`       // the web console (console.go)
	Freeze             freezeConfig              `yaml:"freeze"`        // the emergency stop (freeze.go)
	Attestation        *attestationConfig        `yaml:"attestation"`   // off unless set (attestcmd.go)
	// Store, when set, is the PostgreSQL DSN of a log that several
	// replicas share, instead of <data_dir>/log (servestore.go).
	Store string `yaml:"store"`
	// StoreLease: an allowed request whose outcome is still missing this
	// long after its decision is recorded unknown by another replica
	// (default 1m; servestore.go).
	StoreLease duration `yaml:"store_lease"`
	// StoreLockConnections caps the connections each replica holds the
	// replicas' locks on (default 16): decisions that take locks wait for
	// one beyond that (servestore.go, docs/scale-out.md).
	StoreLockConnections int `yaml:"store_lock_connections"`
}

// freezeConfig configures the emergency stop (rulelock freeze).
type freezeConfig struct {
	// UnfreezeApprovers is how many distinct approvers must each sign for
	// lifting a freeze (default 2).
	UnfreezeApprovers int `yaml:"unfreeze_approvers"`
}

type agentConfig struct {
	ID    string   `yaml:"id"`
	Roles []string `yaml:"roles"`
	// Principal groups agents: the team or person behind several agents,
	// whose limits principal.count/total/succeeded aggregate over.
	Principal   string `yaml:"principal"`
	TokenSHA256 string `yaml:"token_sha256"`
	// ClientCertSHA256 binds the token to the agent's client certificate
	// (SHA-256 of its DER): with mutual TLS, the token alone no longer
	// authenticates.
	ClientCertSHA256 string `yaml:"client_cert_sha256"`
}

type approverConfig struct {
	ID               string   `yaml:"id"`
	Groups           []string `yaml:"groups"`
	Key              string   `yaml:"key"`                // note verifier key: name+hash+key; optional with the console (passkeys)
	Passkeys         []string `yaml:"passkeys"`           // optional: pins the approver's passkeys by fingerprint (sha256:<hex>)
	TokenSHA256      string   `yaml:"token_sha256"`       // optional: lets the approver use the API (list, approve, reject)
	ClientCertSHA256 string   `yaml:"client_cert_sha256"` // optional: binds that token to the approver's client certificate
}

// auditorConfig is a read-only caller: the whole log (entries, proofs,
// entry bundles) and the full /readyz; no actions, no approvals.
type auditorConfig struct {
	ID               string `yaml:"id"`
	TokenSHA256      string `yaml:"token_sha256"`
	ClientCertSHA256 string `yaml:"client_cert_sha256"` // optional: binds the token to the auditor's client certificate
}

type executorConfig struct {
	Method  string                  `yaml:"method"`
	URL     string                  `yaml:"url"`
	Timeout duration                `yaml:"timeout"`
	Headers map[string]headerSource `yaml:"headers"`
}

// headerSource is where a header's value comes from: a literal, the
// gateway's environment or a file — never the agent.
type headerSource struct {
	Value  string `yaml:"value"`
	Env    string `yaml:"env"`
	File   string `yaml:"file"`
	Prefix string `yaml:"prefix"`
}

type limitsConfig struct {
	MaxBody int64 `yaml:"max_body"`
	// MaxHistory is rulelock 0.1's count cap, gone: a config that still
	// sets it is refused with a pointer to memory_budget.
	MaxHistory         int      `yaml:"max_history"`
	MemoryBudget       int64    `yaml:"memory_budget"` // bytes the ledger may keep
	Retention          duration `yaml:"retention"`
	MaxPendingPerAgent int      `yaml:"max_pending_per_agent"`
}

type duration struct{ time.Duration }

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration such as 30s or 5m", n.Line, n.Value)
	}
	d.Duration = v
	return nil
}

func readConfig(path string) (*serveConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseConfig(path, b)
}

// parseConfig reads the config file path, whose bytes are b.
func parseConfig(path string, b []byte) (*serveConfig, error) {
	c := &serveConfig{}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if err := c.checkApproverKeys(b); err != nil {
		return nil, fmt.Errorf("%s:%v", path, err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	c.resolvePaths(dir)
	return c, nil
}

// checkApproverKeys refuses two approvers with one public key (under their
// two names): its one private key would count twice towards a quorum. The
// error opens with the line of the second approver's key, for path:line.
func (c *serveConfig) checkApproverKeys(src []byte) error {
	first := map[string]int{} // public key -> the approver that has it
	for i, a := range c.Approvers {
		pub := approval.PublicKey(a.Key)
		if pub == "" {
			continue // approval.NewRegistry says what is wrong with it
		}
		if j, ok := first[pub]; ok {
			return fmt.Errorf("%d: approver %q has the same public key as approver %q (line %d): one private key must never count twice towards a quorum",
				approverKeyLine(src, i), a.ID, c.Approvers[j].ID, approverKeyLine(src, j))
		}
		first[pub] = i
	}
	return nil
}

// approverKeyLine returns the line of approvers[i].key in the YAML src, 0
// if it cannot tell.
func approverKeyLine(src []byte, i int) int {
	var doc yaml.Node
	if yaml.Unmarshal(src, &doc) != nil || len(doc.Content) == 0 {
		return 0
	}
	value := func(m *yaml.Node, key string) *yaml.Node {
		for k := 0; m != nil && m.Kind == yaml.MappingNode && k+1 < len(m.Content); k += 2 {
			if m.Content[k].Value == key {
				return m.Content[k+1]
			}
		}
		return nil
	}
	seq := value(doc.Content[0], "approvers")
	if seq == nil || seq.Kind != yaml.SequenceNode || i >= len(seq.Content) {
		return 0
	}
	if k := value(seq.Content[i], "key"); k != nil {
		return k.Line
	}
	return seq.Content[i].Line
}

func (c *serveConfig) validate() error {
	if c.Policy != "" && c.Bundle != "" {
		return fmt.Errorf("give policy (development mode) or bundle, not both")
	}
	if c.Limits.MaxHistory != 0 {
		return fmt.Errorf("limits.max_history is gone: there is no count cap any more; the ledger's memory is bounded by limits.memory_budget (bytes)")
	}
	if c.Freeze.UnfreezeApprovers < 0 {
		return fmt.Errorf("freeze.unfreeze_approvers must be a positive number of approvers")
	}
	if c.Limits.MemoryBudget < 0 {
		return fmt.Errorf("limits.memory_budget must be a positive number of bytes")
	}
	if err := c.Notifications.validate(c.Approvers); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, a := range c.Agents {
		switch {
		case a.ID == "":
			return fmt.Errorf("agents[%d]: id is required", i)
		case seen[a.ID]:
			return fmt.Errorf("agents[%d]: agent %q is declared twice", i, a.ID)
		}
		seen[a.ID] = true
		if b, err := hex.DecodeString(a.TokenSHA256); err != nil || len(b) != 32 {
			return fmt.Errorf("agent %q: token_sha256 must be 64 hex digits (rulelock token prints it)", a.ID)
		}
		if err := c.checkCertBinding("agent", a.ID, a.ClientCertSHA256); err != nil {
			return err
		}
	}
	for i, a := range c.Approvers {
		if a.ID == "" || (a.Key == "" && !c.Console.enabled()) {
			return fmt.Errorf("approvers[%d]: id and key are required (key is optional when the console is enabled: the approver votes with a passkey)", i)
		}
		for _, fp := range a.Passkeys {
			if !validFingerprint(fp) {
				return fmt.Errorf("approver %q: passkeys: %q: want sha256:<64 lowercase hex> (the fingerprint shown at enrolment)", a.ID, fp)
			}
		}
		if seen[a.ID] {
			return fmt.Errorf("approver %q has the id of an agent or another approver: an agent never approves", a.ID)
		}
		seen[a.ID] = true
		if b, err := hex.DecodeString(a.TokenSHA256); a.TokenSHA256 != "" && (err != nil || len(b) != 32) {
			return fmt.Errorf("approver %q: token_sha256 must be 64 hex digits", a.ID)
		}
		if a.ClientCertSHA256 != "" && a.TokenSHA256 == "" {
			return fmt.Errorf("approver %q: client_cert_sha256 binds a token, and there is no token_sha256", a.ID)
		}
		if err := c.checkCertBinding("approver", a.ID, a.ClientCertSHA256); err != nil {
			return err
		}
	}
	for i, a := range c.Auditors {
		if a.ID == "" {
			return fmt.Errorf("auditors[%d]: id is required", i)
		}
		if seen[a.ID] {
			return fmt.Errorf("auditor %q has the id of an agent, an approver or another auditor", a.ID)
		}
		seen[a.ID] = true
		if b, err := hex.DecodeString(a.TokenSHA256); err != nil || len(b) != 32 {
			return fmt.Errorf("auditor %q: token_sha256 must be 64 hex digits (rulelock token prints it)", a.ID)
		}
		if err := c.checkCertBinding("auditor", a.ID, a.ClientCertSHA256); err != nil {
			return err
		}
	}
	for typ, e := range c.Executors {
		switch {
		case e.URL == "" || !(strings.HasPrefix(e.URL, "http://") || strings.HasPrefix(e.URL, "https://")):
			return fmt.Errorf("executor %q: url must be http:// or https://", typ)
		case e.Method == "":
			return fmt.Errorf("executor %q: method is required", typ)
		}
		for name, h := range e.Headers {
			n := 0
			for _, s := range []string{h.Value, h.Env, h.File} {
				if s != "" {
					n++
				}
			}
			if n != 1 {
				return fmt.Errorf("executor %q header %q: give exactly one of value, env, file", typ, name)
			}
		}
	}
	if err := c.TLS.validate(); err != nil {
		return err
	}
	if err := c.Console.validate(len(c.Approvers)); err != nil {
		return err
	}
	if err := c.Log.validate(); err != nil {
		return err
	}
	return c.MCP.validate()
}

// checkCertBinding checks a client_cert_sha256: 64 hex digits, and a
// listener that asks for client certificates.
func (c *serveConfig) checkCertBinding(who, id, fp string) error {
	if fp == "" {
		return nil
	}
	if b, err := hex.DecodeString(fp); err != nil || len(b) != 32 {
		return fmt.Errorf("%s %q: client_cert_sha256 must be 64 hex digits (the SHA-256 of the certificate's DER)", who, id)
	}
	if c.TLS.ClientCAFile == "" {
		return fmt.Errorf("%s %q: client_cert_sha256 needs mutual TLS (tls.client_ca_file)", who, id)
	}
	return nil
}

// tokens returns the token hashes of the agents, the approvers and the
// auditors.
func (c *serveConfig) tokens() []httpapi.Token {
	var out []httpapi.Token
	for _, a := range c.Agents {
		var t httpapi.Token
		hex.Decode(t.SHA256[:], []byte(a.TokenSHA256))
		hex.Decode(t.CertSHA256[:], []byte(a.ClientCertSHA256))
		t.Agent = policy.Agent{ID: a.ID, Roles: a.Roles, Principal: a.Principal}
		out = append(out, t)
	}
	for _, a := range c.Approvers {
		if a.TokenSHA256 == "" {
			continue
		}
		t := httpapi.Token{Agent: policy.Agent{ID: a.ID}, Approver: true}
		hex.Decode(t.SHA256[:], []byte(a.TokenSHA256))
		hex.Decode(t.CertSHA256[:], []byte(a.ClientCertSHA256))
		out = append(out, t)
	}
	for _, a := range c.Auditors {
		t := httpapi.Token{Agent: policy.Agent{ID: a.ID}, Auditor: true}
		hex.Decode(t.SHA256[:], []byte(a.TokenSHA256))
		hex.Decode(t.CertSHA256[:], []byte(a.ClientCertSHA256))
		out = append(out, t)
	}
	return out
}

// principals returns who each configured agent is now, for the
// re-evaluation of parked requests (gateway.Config.Principals); nil when
// the agents are not configured (the development agent).
func (c *serveConfig) principals() func(string) (policy.Agent, bool) {
	if len(c.Agents) == 0 {
		return nil
	}
	m := map[string]policy.Agent{}
	for _, a := range c.Agents {
		m[a.ID] = policy.Agent{ID: a.ID, Roles: a.Roles, Principal: a.Principal}
	}
	return func(id string) (policy.Agent, bool) {
		a, ok := m[id]
		return a, ok
	}
}

// registry returns the approvers' registry, nil when there are none.
func (c *serveConfig) registry() (*approval.Registry, error) {
	if len(c.Approvers) == 0 {
		return nil, nil
	}
	var as []approval.Approver
	for _, a := range c.Approvers {
		as = append(as, approval.Approver{ID: a.ID, Groups: a.Groups, Key: a.Key, Passkeys: a.Passkeys})
	}
	return approval.NewRegistry(as)
}

// executors builds the HTTP executors, reading credentials from the
// environment and files. A missing credential is an error: the gateway does
// not start with an executor that would call upstream unauthenticated.
func (c *serveConfig) executors(getenv func(string) string) (map[string]gateway.Executor, error) {
	out := map[string]gateway.Executor{}
	for typ, e := range c.Executors {
		h := http.Header{}
		for name, src := range e.Headers {
			v, err := src.resolve(getenv)
			if err != nil {
				return nil, fmt.Errorf("executor %q header %q: %v", typ, name, err)
			}
			h.Set(name, v)
		}
		timeout := e.Timeout.Duration
		if timeout == 0 {
			timeout = 30 * time.Second
		}
		out[typ] = &gateway.HTTPExecutor{Method: e.Method, URL: e.URL, Headers: h, Client: &http.Client{Timeout: timeout, CheckRedirect: gateway.NoRedirects}}
	}
	return out, nil
}

// resolve reads the value: the literal, the environment variable or the
// file, with the prefix. An empty credential is an error.
func (src headerSource) resolve(getenv func(string) string) (string, error) {
	v := src.Value
	switch {
	case src.Env != "":
		v = getenv(src.Env)
		if v == "" {
			return "", fmt.Errorf("environment variable %s is empty", src.Env)
		}
	case src.File != "":
		b, err := os.ReadFile(src.File)
		if err != nil {
			return "", err
		}
		v = strings.TrimSpace(string(b))
	}
	return src.Prefix + v, nil
}

// checkSources checks that each source gives exactly one of value, env, file.
func checkSources(what string, m map[string]headerSource) error {
	for name, h := range m {
		n := 0
		for _, s := range []string{h.Value, h.Env, h.File} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%s %q: give exactly one of value, env, file", what, name)
		}
	}
	return nil
}

// validFingerprint reports whether s is a passkey fingerprint:
// sha256:<64 lowercase hex>.
func validFingerprint(s string) bool {
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil && strings.ToLower(h) == h
}
