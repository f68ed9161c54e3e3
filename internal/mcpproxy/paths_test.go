package mcpproxy

import (
	"os"
	"path/filepath"
	"testing"
)

func TestResolvePaths(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sandbox := filepath.Join(root, "sandbox")
	outside := filepath.Join(root, "outside")
	for _, d := range []string{sandbox, outside, filepath.Join(sandbox, "docs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "passwd"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(filepath.Join(outside, "passwd"), filepath.Join(sandbox, "link")))
	must(os.Symlink(outside, filepath.Join(sandbox, "dirlink")))
	must(os.Symlink(filepath.Join(outside, "new.txt"), filepath.Join(sandbox, "dangling")))
	must(os.Symlink("../outside", filepath.Join(sandbox, "rel")))

	for in, want := range map[string]string{
		sandbox + "/docs/a.txt":          sandbox + "/docs/a.txt", // not there yet: kept, cleaned
		sandbox + "/docs/../docs//b.txt": sandbox + "/docs/b.txt",
		sandbox + "/../outside/passwd":   outside + "/passwd",
		sandbox + "/link":                outside + "/passwd",
		sandbox + "/dirlink/new/file":    outside + "/new/file",
		sandbox + "/dangling":            outside + "/new.txt",
		sandbox + "/rel/passwd":          outside + "/passwd",
		root + "/sandbox_evil/x":         root + "/sandbox_evil/x",
		"relative/path":                  "relative/path",
	} {
		got, err := resolvePath(in)
		if err != nil || got != want {
			t.Errorf("resolvePath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}

	args := map[string]any{"path": sandbox + "/link", "paths": []any{sandbox + "/dirlink/x"}, "other": sandbox + "/link"}
	if err := resolvePaths(args, []string{"path", "paths"}); err != nil {
		t.Fatal(err)
	}
	if args["path"] != outside+"/passwd" || args["paths"].([]any)[0] != outside+"/x" || args["other"] != sandbox+"/link" {
		t.Errorf("resolvePaths: %v", args)
	}
	if err := checkResolved(args, []string{"path", "paths"}); err != nil {
		t.Errorf("checkResolved on resolved arguments: %v", err)
	}
	if err := checkResolved(map[string]any{"path": sandbox + "/link"}, []string{"path"}); err == nil {
		t.Error("checkResolved accepted an unresolved symbolic link")
	}
	if err := resolvePaths(map[string]any{"path": 7.0}, []string{"path"}); err == nil {
		t.Error("a number accepted as a path")
	}
}
