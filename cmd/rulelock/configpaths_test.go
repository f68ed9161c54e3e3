package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestConfigPathsRelativeToFile: every path key of the config resolves from
// the config file's directory, not from the directory rulelock runs in.
func TestConfigPathsRelativeToFile(t *testing.T) {
	dir := t.TempDir()
	cfg := `data_dir: data
policy: policy
trust: keys/trust.txt
tls:
  cert_file: tls/cert.pem
  key_file: /etc/rulelock/tls.key
  client_ca_file: tls/ca.pem
executors:
  transfer:
    method: POST
    url: http://127.0.0.1:1/x
    headers:
      Authorization: {file: secrets/pay.token}
log:
  signer:
    pkcs11: {module: lib/softhsm2.so, token: t, label: l, pin_file: pin}
mcp:
  upstreams:
    - name: fs
      command: ./bin/server
      dir: work
      args: [relative/stays]
      env:
        TOKEN: {file: secrets/fs.token}
    - name: web
      url: http://127.0.0.1:1/mcp
      headers:
        Authorization: {file: secrets/web.token}
    - name: onpath
      command: npx
approvers:
  - id: alice
    groups: [ops]
    key: alice+8e23fc69+AVhzIuN0xxr5ohEuzZIL/Kgd/MLhS/7pgsie/6aL2ymt
notifications:
  console_url: https://rulelock.example.com
  groups:
    ops:
      url: {file: secrets/hook.url}
      headers:
        Authorization: {file: secrets/hook.token}
`
	path := filepath.Join(dir, "conf", "rulelock.yaml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir()) // somewhere else entirely
	c, err := readConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	in := func(p string) string { return filepath.Join(dir, "conf", p) }
	got := map[string]string{
		"data_dir":       c.DataDir,
		"policy":         c.Policy,
		"trust":          c.Trust,
		"cert_file":      c.TLS.CertFile,
		"key_file":       c.TLS.KeyFile,
		"client_ca_file": c.TLS.ClientCAFile,
		"executor file":  c.Executors["transfer"].Headers["Authorization"].File,
		"pkcs11 module":  c.Log.Signer.PKCS11.Module,
		"pkcs11 pin":     c.Log.Signer.PKCS11.PINFile,
		"fs command":     c.MCP.Upstreams[0].Command,
		"fs dir":         c.MCP.Upstreams[0].Dir,
		"fs arg":         c.MCP.Upstreams[0].Args[0],
		"fs env file":    c.MCP.Upstreams[0].Env["TOKEN"].File,
		"web header":     c.MCP.Upstreams[1].Headers["Authorization"].File,
		"onpath command": c.MCP.Upstreams[2].Command,
		"notify url":     c.Notifications.Groups["ops"].URL.File,
		"notify header":  c.Notifications.Groups["ops"].Headers["Authorization"].File,
	}
	want := map[string]string{
		"data_dir":       in("data"),
		"policy":         in("policy"),
		"trust":          in("keys/trust.txt"),
		"cert_file":      in("tls/cert.pem"),
		"key_file":       "/etc/rulelock/tls.key",
		"client_ca_file": in("tls/ca.pem"),
		"executor file":  in("secrets/pay.token"),
		"pkcs11 module":  in("lib/softhsm2.so"),
		"pkcs11 pin":     in("pin"),
		"fs command":     in("bin/server"),
		"fs dir":         in("work"),
		"fs arg":         "relative/stays", // the upstream's to read
		"fs env file":    in("secrets/fs.token"),
		"web header":     in("secrets/web.token"),
		"onpath command": "npx", // found on PATH
		"notify url":     in("secrets/hook.url"),
		"notify header":  in("secrets/hook.token"),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("resolved paths (-want +got):\n%s", diff)
	}
}
