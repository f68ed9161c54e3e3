package mcpproxy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pathWorld is a root holding files whose names the reference filesystem
// server matches by Unicode NFC, next to a directory outside it.
func pathWorld(t *testing.T) (root, outside string) {
	t.Helper()
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	root, outside = filepath.Join(base, "sandbox"), filepath.Join(base, "outside")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{root + "/docs", root + "/inner", outside, base + "/sandbox_evil"} {
		must(os.MkdirAll(d, 0o755))
	}
	for _, f := range []string{root + "/KEY.txt", root + "/café.txt", root + "/docs/a.txt", root + "/inner/b.txt",
		outside + "/passwd", root + "/\u00c5", root + "/A\u030a"} {
		must(os.WriteFile(f, []byte("x"), 0o644))
	}
	must(os.Symlink(outside+"/passwd", root+"/link"))
	must(os.Symlink(outside, root+"/dirlink"))
	must(os.Symlink("../outside", root+"/rel"))
	must(os.Symlink(outside+"/new.txt", root+"/dangling"))
	must(os.Symlink("inner", root+"/inlink"))
	return root, outside
}

func TestResolvePath(t *testing.T) {
	root, _ := pathWorld(t)
	strict := newPathResolver("", []string{root})
	resolve := newPathResolver(PathResolve, []string{root})
	for _, c := range []struct {
		r       *pathResolver
		in      string
		want    string // "" with an error containing fails
		fails   string
		comment string
	}{
		{strict, root + "/\u212aEY.txt", root + "/KEY.txt", "", "Kelvin sign: NFC is K"},
		{strict, root + "/cafe\u0301.txt", root + "/café.txt", "", "a combining sequence"},
		{strict, "\u212aEY.txt", root + "/KEY.txt", "", "relative, as the server resolves it"},
		{strict, root + "/docs/../docs//a.txt", root + "/docs/a.txt", "", "cleaned"},
		{strict, root + "/docs/new.txt", root + "/docs/new.txt", "", "not there yet: kept"},
		{strict, root + "/\uff2b\uff25\uff39.txt", root + "/\uff2b\uff25\uff39.txt", "", "fullwidth: NFKC only, another name to the server"},
		{strict, root + "/key.txt", root + "/key.txt", "", "the server does not fold case"},
		{strict, root + "/\u212b", "", "equivalent to 2 entries", "Angstrom sign: two entries are its NFC"},
		{strict, root + "/../outside/passwd", "", "outside the roots", ".."},
		{strict, "../outside/passwd", "", "outside the roots", "relative .."},
		{strict, root + "_evil/x", "", "outside the roots", "a sibling with the root's prefix"},
		{strict, root + "/link", "", "symbolic link", "strict: no links"},
		{strict, root + "/inlink/b.txt", "", "symbolic link", "strict: not even inside"},
		{resolve, root + "/inlink/b.txt", root + "/inner/b.txt", "", "resolve: a link inside"},
		{resolve, root + "/link", "", "outside the roots", "resolve: a link out"},
		{resolve, root + "/dirlink/x", "", "outside the roots", "resolve: a directory link out"},
		{resolve, root + "/rel/passwd", "", "outside the roots", "resolve: a relative link out"},
		{resolve, root + "/dangling", "", "leads nowhere", "resolve: a dangling link"},
		{strict, root + "/a\x00b", "", "NUL", ""},
		{strict, root + "/a\nb", "", "control character", ""},
		{strict, root + "/a\u0085b", "", "control character", "C1"},
		{strict, root + "/ke\u200by.txt", "", "invisible format character", "zero-width space"},
		{strict, root + "/\u202etxt.yek", "", "invisible format character", "right-to-left override"},
		{strict, root + "/key\U000e0041.txt", "", "invisible format character", "a tag character"},
		{strict, root + "/KEY.txt\ufeff", "", "white space", "JavaScript's trim removes U+FEFF"},
		{strict, root + "/KEY.txt.", "", "ending in a dot", "Windows and SMB drop it"},
		{strict, root + "/KEY.txt ", "", "white space", ""},
		{strict, root + "/KEY .txt/x ", "", "white space", ""},
		{strict, root + "/d /x", "", "ending in a dot or a space", ""},
		{strict, " " + root + "/KEY.txt", "", "white space", "the server trims it for its check only"},
		{strict, root + "/" + strings.Repeat("a", 256), "", "longer than 255", ""},
		{strict, root + strings.Repeat("/a", 2100), "", "longer than 4096", ""},
		{strict, root + "/KEY.txt/x", "", "not a directory", ""},
		{strict, "", "", "empty", ""},
	} {
		got, err := c.r.resolve(c.in)
		switch {
		case c.fails == "" && (err != nil || got != c.want):
			t.Errorf("%s: resolve(%q) = %q, %v; want %q", c.comment, c.in, got, err, c.want)
		case c.fails != "" && (err == nil || !strings.Contains(err.Error(), c.fails)):
			t.Errorf("%s: resolve(%q) = %q, %v; want an error containing %q", c.comment, c.in, got, err, c.fails)
		}
	}
	if _, err := newPathResolver("", nil).resolve(root + "/KEY.txt"); err == nil {
		t.Error("a resolver without roots resolved a path")
	}
}

func TestResolvePathArguments(t *testing.T) {
	root, _ := pathWorld(t)
	r := newPathResolver(PathResolve, []string{root})
	args := map[string]any{"path": root + "/inlink/b.txt", "paths": []any{root + "/\u212aEY.txt"}, "other": root + "/inlink"}
	if err := r.resolvePaths(args, []string{"path", "paths"}); err != nil {
		t.Fatal(err)
	}
	if args["path"] != root+"/inner/b.txt" || args["paths"].([]any)[0] != root+"/KEY.txt" || args["other"] != root+"/inlink" {
		t.Errorf("resolvePaths: %v", args)
	}
	if err := r.resolvePaths(map[string]any{"path": 7.0}, []string{"path"}); err == nil {
		t.Error("a number accepted as a path")
	}
	if err := r.resolvePaths(map[string]any{"paths": []any{root, 7.0}}, []string{"paths"}); err == nil {
		t.Error("a number accepted in a list of paths")
	}
}

// TestPathGuard shows what the strict mode's guard sees: nothing while the
// path stands still or the tool writes its own last name, a change when a
// directory on the path is swapped for a link and back.
func TestPathGuard(t *testing.T) {
	if !guardSupported {
		t.Skip("the path guard needs Linux")
	}
	root, outside := pathWorld(t)
	r := newPathResolver("", []string{root})
	p := root + "/inner/b.txt"

	g, err := r.guard([]string{p}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root+"/inner/other.txt", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, why := g.changed(); changed {
		t.Errorf("a file created next to the path counts as a change: %s", why)
	}
	swap := func() {
		t.Helper()
		for _, step := range [][2]string{{root + "/inner", root + "/inner.away"}, {root + "/dirlink", root + "/inner"},
			{root + "/inner", root + "/dirlink"}, {root + "/inner.away", root + "/inner"}} {
			if err := os.Rename(step[0], step[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	swap() // there and back: the path looks as it did
	if changed, _ := g.changed(); !changed {
		t.Error("a directory on the path swapped for a link and back went unseen")
	}
	g.close()

	// A tool that writes: its own last name changes, its directories do not.
	g, err = r.guard([]string{root + "/inner/new.txt"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root+"/inner/new.txt", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, why := g.changed(); changed {
		t.Errorf("a writing tool's own file counts as a change: %s", why)
	}
	swap()
	if changed, _ := g.changed(); !changed {
		t.Error("a swap under a writing tool went unseen")
	}
	g.close()

	// A read-only tool's last name replaced by a link and back.
	g, err = r.guard([]string{root + "/KEY.txt"}, true)
	if err != nil {
		t.Fatal(err)
	}
	os.Rename(root+"/KEY.txt", root+"/KEY.away")
	os.Symlink(outside+"/passwd", root+"/KEY.txt")
	os.Remove(root + "/KEY.txt")
	os.Rename(root+"/KEY.away", root+"/KEY.txt")
	if changed, _ := g.changed(); !changed {
		t.Error("the last name swapped for a link and back went unseen")
	}
	g.close()

	// A link on the path when the guard starts: refused at once.
	if _, err := r.guard([]string{root + "/dirlink/passwd"}, true); !errors.Is(err, errPathChanged) {
		t.Errorf("guard over a link: %v, want errPathChanged", err)
	}
}

// BenchmarkResolve is what path identity adds to a call before the
// decision: one path, three names deep.
func BenchmarkResolve(b *testing.B) {
	root := b.TempDir()
	if err := os.MkdirAll(root+"/a/b", 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(root+"/a/b/c.txt", nil, 0o644); err != nil {
		b.Fatal(err)
	}
	r := newPathResolver("", []string{root})
	p := r.roots[0] + "/a/b/c.txt"
	for b.Loop() {
		if _, err := r.resolve(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGuard is what strict mode adds around the forwarded call: the
// walk without links, the watches, and reading the queue afterwards.
func BenchmarkGuard(b *testing.B) {
	if !guardSupported {
		b.Skip("the path guard needs Linux")
	}
	root := b.TempDir()
	if err := os.MkdirAll(root+"/a/b", 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(root+"/a/b/c.txt", nil, 0o644); err != nil {
		b.Fatal(err)
	}
	r := newPathResolver("", []string{root})
	p := r.roots[0] + "/a/b/c.txt"
	for b.Loop() {
		g, err := r.guard([]string{p}, true)
		if err != nil {
			b.Fatal(err)
		}
		if changed, why := g.changed(); changed {
			b.Fatal(why)
		}
		g.close()
	}
}

func TestPathConfig(t *testing.T) {
	base := Upstream{Name: "fs", Command: "server", PathArguments: []string{"path"}}
	for _, c := range []struct {
		mod  func(u *Upstream)
		fail string
	}{
		{func(u *Upstream) {}, "need roots"},
		{func(u *Upstream) { u.Roots = []string{"/srv"}; u.PathMode = "loose" }, "want strict or resolve"},
		{func(u *Upstream) { u.Roots = []string{"/srv"} }, ""},
		{func(u *Upstream) { u.Roots = []string{"/srv"}; u.PathMode = PathResolve }, ""},
		{func(u *Upstream) { u.PathArguments = nil }, ""},
	} {
		u := base
		c.mod(&u)
		err := u.Validate()
		if c.fail == "" && err != nil || c.fail != "" && (err == nil || !strings.Contains(err.Error(), c.fail)) {
			t.Errorf("Validate(%+v) = %v, want %q", u, err, c.fail)
		}
	}
}
