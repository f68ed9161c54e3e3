package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/rulelock/rulelock/internal/fsx"
	"github.com/rulelock/rulelock/internal/mcpproxy"
	"github.com/rulelock/rulelock/internal/strictjson"
)

// pinHashRE is the form of a pinned hash.
var pinHashRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// pinsPath is the config's pin file.
func (cfg *serveConfig) pinsPath() string {
	if cfg.MCP.Pins != "" {
		return cfg.MCP.Pins
	}
	dir := cfg.DataDir
	if dir == "" {
		dir = "rulelock-data"
	}
	return filepath.Join(dir, "mcp-pins.json")
}

// readPins reads a pin file: a JSON object from qualified tool names to
// "sha256:<hex>" (the shape of a bundle's mcp_tools document). A missing
// file pins nothing.
func readPins(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	v, err := strictjson.Decode(b, strictjson.Limits{})
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: not a JSON object of tool names and hashes", path)
	}
	out := make(map[string]string, len(m))
	for name, h := range m {
		s, ok := h.(string)
		if !ok || !pinHashRE.MatchString(s) {
			return nil, fmt.Errorf("%s: %q: %v is not a hash sha256:<64 hex digits>", path, name, h)
		}
		out[name] = s
	}
	return out, nil
}

// runMCPPin shows the upstreams' tool definitions, safely rendered, with
// what vetting found and how each stands against the pin file; with
// --write it pins them.
func runMCPPin(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "mcp pin", "--config FILE [--write [TOOL[=HASH] ...]]")
	cfgPath := fs.String("config", "", "configuration file with an mcp section")
	write := fs.Bool("write", false, "write the pins: of the TOOLs named (at HASH, when given), else of every tool shown that is not refused")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return usageError("mcp pin needs --config FILE with an mcp section")
	}
	if fs.NArg() > 0 && !*write {
		return usageError("naming tools needs --write")
	}
	cfg, err := readConfig(*cfgPath)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("invalid config: %v", err)}
	}
	if len(cfg.MCP.Upstreams) == 0 {
		return &exitError{code: 2, err: fmt.Errorf("invalid config: %s has no mcp.upstreams", *cfgPath)}
	}
	pc, err := cfg.proxyConfig(e)
	if err != nil {
		return err
	}
	pc.Logger = nil // the findings are shown below
	defs, err := mcpproxy.Inspect(ctx, pc)
	if err != nil {
		return fmt.Errorf("mcp pin: %w", err)
	}
	path := cfg.pinsPath()
	showDefinitions(e.stdout, defs, pc.Pins, path)
	if !*write {
		fmt.Fprintf(e.stdout, "\nnothing written: after review, rulelock mcp pin --config %s --write [TOOL[=HASH] ...]\n", *cfgPath)
		return nil
	}
	chosen, err := choosePins(defs, fs.Args())
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("mcp pin: %v", err)}
	}
	for name, h := range chosen {
		pc.Pins[name] = h
	}
	b, _ := json.MarshalIndent(pc.Pins, "", "  ")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := fsx.WriteFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("mcp pin: write %s: %w", path, err)
	}
	fmt.Fprintf(e.stdout, "\npinned %d tools in %s (restart rulelock to apply; in production, ship it as the bundle's mcp_tools.json)\n", len(chosen), path)
	return nil
}

// choosePins returns the pins to write: the named tools (TOOL or
// TOOL=HASH, which must be the hash just shown), or every tool that is not
// refused.
func choosePins(defs []mcpproxy.Definition, names []string) (map[string]string, error) {
	byName := map[string]mcpproxy.Definition{}
	for _, d := range defs {
		byName[d.Name] = d
	}
	out := map[string]string{}
	if len(names) == 0 {
		for _, d := range defs {
			if d.Quarantined != "tool_refused" {
				out[d.Name] = d.SHA256
			}
		}
		return out, nil
	}
	for _, arg := range names {
		name, want, hashed := strings.Cut(arg, "=")
		d, ok := byName[name]
		switch {
		case !ok:
			return nil, fmt.Errorf("no upstream lists %s", name)
		case d.Quarantined == "tool_refused":
			return nil, fmt.Errorf("%s is refused (see above): no pin exposes it", name)
		case hashed && want != d.SHA256:
			return nil, fmt.Errorf("%s is now %s, not %s: its definition changed since it was reviewed", name, d.SHA256, want)
		}
		out[name] = d.SHA256
	}
	return out, nil
}

// showDefinitions prints each definition for review: name, hash, standing
// against the pin file, findings, and the definition with every invisible
// character escaped.
func showDefinitions(w io.Writer, defs []mcpproxy.Definition, pins map[string]string, path string) {
	sort.Slice(defs, func(i, j int) bool { return defs[i].Name < defs[j].Name })
	fmt.Fprintf(w, "%d tools; pin file %s\n", len(defs), path)
	for _, d := range defs {
		var standing string
		switch pin := pins[d.Name]; {
		case d.Quarantined == "tool_refused":
			standing = "REFUSED: never exposed, whatever pins it"
		case pin == d.SHA256:
			standing = "pinned"
		case pin == "":
			standing = "not pinned"
		default:
			standing = "CHANGED: the pin file has " + pin
		}
		fmt.Fprintf(w, "\n== %s %s  %s\n", d.Name, d.SHA256, standing)
		for _, f := range d.Findings {
			fmt.Fprintf(w, "   %s\n", f)
		}
		if d.Raw != nil {
			fmt.Fprintln(w, "   "+strings.ReplaceAll(mcpproxy.Render(d.Raw), "\n", "\n   "))
		}
	}
}
