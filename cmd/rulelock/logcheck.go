package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/rulelock/rulelock/audit"
)

// openLog opens the audit log of a gateway's data directory. It says on
// stderr what recovery repaired, and a damaged log refuses to start with a
// pointer to `rulelock log check`.
func openLog(e *env, dataDir string) (*audit.Log, error) {
	dir := filepath.Join(dataDir, "log")
	l, err := audit.Open(dir, audit.Options{})
	if errors.Is(err, audit.ErrCorrupt) {
		return nil, &exitError{code: 1, err: fmt.Errorf("%w\nrulelock: refusing to start: recovery would discard acknowledged entries; see the damage with `rulelock log check --data %s` (docs/audit-log.md, Recovery)", err, dataDir)}
	}
	if err != nil {
		return nil, err
	}
	if t, ok := l.TornTail(); ok {
		fmt.Fprintf(e.stderr, "rulelock: audit log recovery: zeroed a torn tail of %d bytes at %s offset %d (entry %d, never acknowledged); a copy is in %s\n",
			t.Bytes, t.Segment, t.Offset, t.Index, filepath.Join(dir, t.Saved))
	}
	return l, nil
}

// runLogCheck implements `rulelock log check`.
func runLogCheck(e *env, args []string) error {
	fs := logFlags(e, "check")
	data := fs.String("data", "", "the gateway's data `directory` (its log is DIR/log; default rulelock-data)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	var dir string
	switch {
	case len(pos) == 1 && *data == "":
		dir = pos[0]
	case len(pos) == 0:
		d := *data
		defaultTo(&d, "rulelock-data")
		dir = filepath.Join(d, "log")
	default:
		return usageError("want --data DIR or one log directory")
	}
	rep, err := audit.CheckDir(dir)
	if err != nil {
		return fmt.Errorf("check %s: %w", dir, err)
	}
	if *asJSON {
		err = writeJSON(e.stdout, checkJSON(dir, rep))
	} else {
		printCheck(e, dir, rep)
	}
	if err == nil && rep.Damage != nil {
		err = &exitError{code: 1}
	}
	return err
}

func printCheck(e *env, dir string, rep *audit.CheckReport) {
	fmt.Fprintf(e.stdout, "log %s: %d entries in %d segments\n", dir, rep.Entries, len(rep.Segments))
	for _, s := range rep.Segments {
		span := "no entries"
		if s.Entries > 0 {
			span = fmt.Sprintf("entries %d-%d", s.First, s.First+s.Entries-1)
		}
		fmt.Fprintf(e.stdout, "segment %s: %s, frames end at offset %d of %d\n", s.Name, span, s.End, s.Size)
	}
	if c := rep.Checkpoint; c != nil {
		fmt.Fprintf(e.stdout, "checkpoint %d covers %d entries, root %s (signature not checked: use rulelock verify)\n", c.Seq, c.Size, c.Root)
	} else {
		fmt.Fprintln(e.stdout, "no checkpoint yet")
	}
	if t := rep.Torn; t != nil {
		fmt.Fprintf(e.stdout, "torn tail: %d bytes of entry %d at %s offset %d, never acknowledged; the gateway zeroes them when it next opens the log\n", t.Bytes, t.Index, t.Segment, t.Offset)
	}
	if d := rep.Damage; d != nil {
		fmt.Fprintf(e.stdout, "DAMAGE: %v\n", d)
		fmt.Fprintln(e.stdout, "the gateway refuses to start on this log: restore the damaged files from a copy (docs/audit-log.md, Recovery)")
		return
	}
	fmt.Fprintln(e.stdout, "ok: no damage")
}

func checkJSON(dir string, rep *audit.CheckReport) map[string]any {
	segs := []map[string]any{}
	for _, s := range rep.Segments {
		segs = append(segs, map[string]any{"name": s.Name, "first": s.First, "entries": s.Entries, "end": s.End, "size": s.Size})
	}
	out := map[string]any{"ok": rep.Damage == nil, "log": dir, "entries": rep.Entries, "segments": segs}
	if c := rep.Checkpoint; c != nil {
		out["checkpoint"] = map[string]any{"seq": c.Seq, "size": c.Size, "root": c.Root.String()}
	}
	if t := rep.Torn; t != nil {
		out["torn"] = map[string]any{"segment": t.Segment, "offset": t.Offset, "bytes": t.Bytes, "index": t.Index}
	}
	if d := rep.Damage; d != nil {
		dmg := map[string]any{"code": "corrupt", "index": d.Index, "reason": d.Reason, "message": d.Error()}
		if d.Segment != "" {
			dmg["segment"] = d.Segment
		}
		if d.Offset >= 0 {
			dmg["offset"] = d.Offset
		}
		out["damage"] = dmg
	}
	return out
}
