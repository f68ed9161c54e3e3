package main

import (
	"path/filepath"
	"strings"
)

// resolvePaths makes the config's relative paths relative to dir, the
// directory of the config file, not to the directory rulelock was started
// in: an agent that launches `rulelock mcp --config /etc/rulelock.yaml`
// does so from wherever it runs. Every key that names a file or directory
// is resolved: data_dir, policy, bundle, trust, the tls files, every
// credential's file (executors', notifications', upstreams'), export's TLS files, log.signer.pkcs11's module and pin_file, and an MCP
// upstream's dir and command. A command or module without a "/" is a name
// for PATH (or the dynamic loader) to find and is left alone; upstream args
// are the upstream's to read, and roots must already be absolute.
func (c *serveConfig) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	withSlash := func(p *string) {
		if strings.Contains(*p, "/") {
			abs(p)
		}
	}
	sources := func(m map[string]headerSource) {
		for k, src := range m {
			abs(&src.File)
			m[k] = src
		}
	}
	for _, p := range []*string{&c.DataDir, &c.Policy, &c.Bundle, &c.Trust, &c.MCP.Pins,
		&c.TLS.CertFile, &c.TLS.KeyFile, &c.TLS.ClientCAFile} {
		abs(p)
	}
	for name, x := range c.Executors {
		sources(x.Headers)
		c.Executors[name] = x
	}
	for name, g := range c.Notifications.Groups {
		abs(&g.URL.File)
		sources(g.Headers)
		c.Notifications.Groups[name] = g
	}
	if k := c.Log.Signer.PKCS11; k != nil {
		withSlash(&k.Module)
		abs(&k.PINFile)
	}
	for i := range c.MCP.Upstreams {
		u := &c.MCP.Upstreams[i]
		abs(&u.Dir)
		withSlash(&u.Command)
		sources(u.Env)
		sources(u.Headers)
	}
	if x := c.Export; x != nil {
		abs(&x.Cursor)
		abs(&x.CAFile)
		abs(&x.CertFile)
		abs(&x.KeyFile)
		if p, ok := strings.CutPrefix(x.To, "file:"); ok {
			abs(&p)
			x.To = "file:" + p
		}
	}
}
