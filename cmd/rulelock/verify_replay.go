package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/replay"
)

// replayOptions returns what the replay shares with the gateway that wrote
// the log: with a config, its approvers and its limits; without, the
// development approvers in the data directory and the default limits.
func replayOptions(configPath, dataDir string) (replay.Options, error) {
	if configPath != "" {
		c, err := readConfig(configPath)
		if err != nil {
			return replay.Options{}, err
		}
		opts := c.replayLimits()
		opts.Approvers, err = c.registry()
		return opts, err
	}
	reg, err := dataDirApprovers(dataDir)
	return replay.Options{Approvers: reg}, err
}

// replayLimits are the config's limits as a replay needs them.
func (c *serveConfig) replayLimits() replay.Options {
	return replay.Options{Retention: c.Limits.Retention.Duration}
}

// dataDirApprovers returns the development approvers in the data directory.
func dataDirApprovers(dataDir string) (*approval.Registry, error) {
	pubs, _ := filepath.Glob(filepath.Join(dataDir, "approvers", "*.pub"))
	if len(pubs) == 0 {
		return nil, nil
	}
	var as []approval.Approver
	for _, p := range pubs {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		id := strings.TrimSuffix(filepath.Base(p), ".pub")
		as = append(as, approval.Approver{ID: id, Groups: devApproverGroups, Key: strings.TrimSpace(string(b))})
	}
	return approval.NewRegistry(as)
}

// verifyReplay re-runs every recorded decision under the archived policy it
// names and checks the log's completeness (see package replay). It reads
// the log without its lock, so a running gateway's log can be verified.
func verifyReplay(logDir, bundlesDir string, opts replay.Options) (*replay.Summary, error) {
	opts.Bundles = bundlesDir
	return replay.VerifyDir(logDir, opts)
}
