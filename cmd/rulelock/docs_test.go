package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDocs runs the documentation as written: every ```sh block of each
// docs/*.md, in order, in a fresh working directory per document, with the
// built rulelock first on PATH and a copy of the repository's examples/
// beside it.
//
// A document steers the run with HTML comments (invisible when rendered),
// each on a line of its own:
//
//	<!-- doctest: serve ARGS -->   start `rulelock serve ARGS` in the working
//	                                directory before the next block, and stop
//	                                it at the end (127.0.0.1:8080 and :8081 in
//	                                the blocks become the address it listens on)
//	<!-- doctest: stop -->         stop that gateway before the next block
//	<!-- doctest: skip REASON -->  do not run the next sh block, because REASON
//	<!-- doctest: skip-all REASON -->  run none of the document's blocks
//	<!-- doctest: file NAME -->    write the next fenced block (rules, json,
//	                                yaml...) to NAME in the working directory,
//	                                for the blocks after it to use
//	<!-- doctest: file NAME TEXT -->  write TEXT (the rest of the line: an input
//	                                the prose describes) to NAME
//
// A ```console block is a transcript: each line "$ COMMAND" is run (as a
// sh block's line is), and what it prints, stdout and stderr together,
// must be the lines that follow it up to the next "$ " line, exactly (but
// for trailing spaces). "$ cat -n NAME" with no file NAME yet writes NAME
// from the listing shown: the transcript is then where the file is
// written, and the commands after it read it. A transcript whose output
// drifts from what the commands print fails the test.
//
// A block that does not run must say why (skip needs a reason); output and
// snippets that are not commands belong in text, json or yaml blocks, and a
// command in an untagged block is an error, so that none escapes the test.
func TestDocs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs every document's commands")
	}
	bin, err := rulelockBinary()
	if err != nil {
		t.Fatal(err)
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	docs, err := filepath.Glob(filepath.Join(repo, "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md (%v)", err)
	}
	for _, doc := range docs {
		t.Run(filepath.Base(doc), func(t *testing.T) {
			md, err := os.ReadFile(doc)
			if err != nil {
				t.Fatal(err)
			}
			steps, err := parseDoc(string(md))
			if err != nil {
				t.Fatalf("%s:%v", filepath.Base(doc), err)
			}
			updates = map[int][]string{}
			runDoc(t, bin, repo, steps)
			if *updateDocs && len(updates) > 0 {
				if err := os.WriteFile(doc, []byte(applyUpdates(string(md), updates)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// A docStep is one thing a document asks the test to do: run a sh block,
// or start or stop a gateway (before the blocks after it).
type docStep struct {
	line   int    // where it is in the document
	script string // a sh block's text, or ""
	serve  string // rulelock serve's arguments, for a serve directive
	stop   bool
	skip   string // why this sh block is not run
	// A console block's transcript (script holds it), or a file directive's
	// name and the block it writes.
	console bool
	file    string
	content string
}

// parseDoc returns a document's sh blocks and directives in order. It
// rejects a skip without a reason or with no sh block after it, an unknown
// directive, and a command in a block with no language.
func parseDoc(md string) ([]docStep, error) {
	var steps []docStep
	var skip, file string
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if d, ok := strings.CutPrefix(line, "<!-- doctest:"); ok {
			d = strings.TrimSpace(strings.TrimSuffix(d, "-->"))
			verb, arg, _ := strings.Cut(d, " ")
			switch verb {
			case "serve":
				steps = append(steps, docStep{line: i + 1, serve: arg})
			case "stop":
				steps = append(steps, docStep{line: i + 1, stop: true})
			case "skip-all":
				if strings.TrimSpace(arg) == "" {
					return nil, fmt.Errorf("%d: doctest: skip-all without a reason", i+1)
				}
				steps = append(steps, docStep{line: i + 1, skip: arg})
			case "skip":
				if strings.TrimSpace(arg) == "" {
					return nil, fmt.Errorf("%d: doctest: skip without a reason", i+1)
				}
				skip = arg
			case "file":
				name, content, _ := strings.Cut(strings.TrimSpace(arg), " ")
				if name == "" || filepath.IsAbs(name) || strings.Contains(name, "..") {
					return nil, fmt.Errorf("%d: doctest: file wants a relative file name", i+1)
				}
				if content != "" {
					steps = append(steps, docStep{line: i + 1, file: name, content: content + "\n"})
					continue
				}
				file = name
			default:
				return nil, fmt.Errorf("%d: unknown doctest directive %q", i+1, verb)
			}
			continue
		}
		lang, ok := strings.CutPrefix(line, "```")
		if !ok {
			continue
		}
		start := i
		var body []string
		for i++; i < len(lines) && !strings.HasPrefix(strings.TrimSpace(lines[i]), "```"); i++ {
			body = append(body, lines[i])
		}
		switch {
		case file != "":
			steps = append(steps, docStep{line: start + 1, file: file, content: dedent(body)})
			file = ""
		case lang == "sh":
			steps = append(steps, docStep{line: start + 1, script: dedent(body), skip: skip})
			skip = ""
		case lang == "console":
			steps = append(steps, docStep{line: start + 1, script: dedent(body), skip: skip, console: true})
			skip = ""
		case lang == "" && looksLikeCommand(body):
			return nil, fmt.Errorf("%d: a command in a block with no language: tag it sh (the test runs it) or text", start+1)
		}
	}
	if skip != "" {
		return nil, fmt.Errorf("a doctest skip (%s) with no sh block after it", skip)
	}
	if file != "" {
		return nil, fmt.Errorf("a doctest file (%s) with no block after it", file)
	}
	return steps, nil
}

// looksLikeCommand reports whether a block's first line is a command line
// of the kind the documents show.
func looksLikeCommand(body []string) bool {
	if len(body) == 0 {
		return false
	}
	f := strings.Fields(body[0])
	switch {
	case len(f) == 0:
		return false
	case f[0] == "rulelock":
		// Not a format's first line: "rulelock bundle v1".
		return len(f) != 3 || !strings.HasPrefix(f[2], "v")
	}
	return slices.Contains([]string{"$", "curl", "go", "npx", "make"}, f[0])
}

// dedent removes the indentation of a block inside a list item.
func dedent(lines []string) string {
	indent := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, " "))
		if indent < 0 || n < indent {
			indent = n
		}
	}
	var b strings.Builder
	for _, l := range lines {
		if len(l) >= indent && indent > 0 {
			l = l[indent:]
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// runDoc runs a document's steps in a fresh working directory. The blocks
// share the directory and the shell variables they assign (NAME=... at
// the start of a line), as they would in one terminal. A `rulelock serve`
// line in a block starts the document's gateway (as the serve directive
// does) before the rest of the block runs.
func runDoc(t *testing.T, bin, repo string, steps []docStep) {
	work := t.TempDir()
	// A copy: an example config's data directory is beside it.
	if err := os.CopyFS(filepath.Join(work, "examples"), os.DirFS(filepath.Join(repo, "examples"))); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "vars")
	if err := os.WriteFile(state, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Dir(bin) + string(os.PathListSeparator) + os.Getenv("PATH")
	var gw *docGateway
	defer func() { gw.stop(t) }()
	for _, st := range steps {
		switch {
		case st.skip != "" && st.script == "":
			t.Skipf("line %d: doctest: skip-all: %s", st.line, st.skip)
		case st.serve != "":
			gw.stop(t)
			gw = startDocGateway(t, bin, work, st)
			continue
		case st.stop:
			gw.stop(t)
			gw = nil
			continue
		case st.skip != "":
			t.Logf("line %d: not run: %s", st.line, st.skip)
			continue
		case st.file != "":
			writeFile(t, filepath.Join(work, st.file), st.content)
			continue
		case st.console:
			runTranscript(t, work, path, state, gw, st)
			continue
		}
		before, serve, after := splitServe(st.script)
		runBlock(t, work, path, state, gw, st, before)
		if serve != "" {
			gw.stop(t)
			gw = startDocGateway(t, bin, work, docStep{line: st.line, serve: serve})
			runBlock(t, work, path, state, gw, st, after)
		}
	}
}

// runBlock runs script, a sh block or the part of one around its
// `rulelock serve` line, with the variables earlier blocks assigned.
func runBlock(t *testing.T, work, path, state string, gw *docGateway, st docStep, script string) {
	t.Helper()
	if strings.TrimSpace(script) == "" {
		return
	}
	env := append(os.Environ(), "PATH="+path, "HOME="+work)
	if gw != nil {
		// The documented addresses: the quickstart's and examples/mcp.yaml's.
		script = strings.NewReplacer("127.0.0.1:8080", gw.addr, "127.0.0.1:8081", gw.addr).Replace(script)
		env = append(env, "RULELOCK_GATEWAY=http://"+gw.addr)
	}
	script = "source " + state + "\nset -euo pipefail\n" + script + keepVars(script, state)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	sh := exec.CommandContext(ctx, "bash", "-c", script)
	sh.Dir, sh.Env = work, env
	// A block that hangs is killed with everything it started.
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	sh.Cancel = func() error { return syscall.Kill(-sh.Process.Pid, syscall.SIGKILL) }
	sh.WaitDelay = time.Second
	out, err := sh.CombinedOutput()
	if err != nil {
		t.Fatalf("the sh block at line %d: %v\n%s\noutput:\n%s", st.line, err, st.script, out)
	}
	t.Logf("the sh block at line %d:\n%s", st.line, out)
}

// updateDocs rewrites the documents' console transcripts with what their
// commands print (go test -run TestDocs -update-docs): review the diff, as
// for any golden file.
var updateDocs = flag.Bool("update-docs", false, "rewrite the console transcripts of docs/*.md with what their commands print")

// updates are the outputs -update-docs writes, by the line of their
// command in the document being run.
var updates map[int][]string

// applyUpdates rewrites md's transcripts: after each command line in
// updates, its output replaces the lines shown, up to the next "$ " line
// or the block's end.
func applyUpdates(md string, updates map[int][]string) string {
	lines := strings.Split(md, "\n")
	var out []string
	for i := 0; i < len(lines); i++ {
		out = append(out, lines[i])
		got, ok := updates[i+1]
		if !ok {
			continue
		}
		for i+1 < len(lines) && !strings.HasPrefix(lines[i+1], "$ ") && !strings.HasPrefix(lines[i+1], "```") {
			i++
		}
		out = append(out, got...)
	}
	return strings.Join(out, "\n")
}

// A transcriptStep is one command of a console block and what it printed.
type transcriptStep struct {
	line    int // the command's line in the document
	command string
	want    []string
}

// parseTranscript splits a console block (starting at line) into its
// commands and their output.
func parseTranscript(line int, script string) ([]transcriptStep, error) {
	var out []transcriptStep
	for i, l := range strings.Split(strings.TrimRight(script, "\n"), "\n") {
		if cmd, ok := strings.CutPrefix(l, "$ "); ok {
			out = append(out, transcriptStep{line: line + 1 + i, command: cmd})
			continue
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("%d: a console block must open with a \"$ \" command line", line)
		}
		out[len(out)-1].want = append(out[len(out)-1].want, l)
	}
	return out, nil
}

// catListing matches a line of `cat -n`: the number right-aligned in six
// columns, a tab, the line.
var catListing = regexp.MustCompile(`^ *([0-9]+)\t(.*)$`)

// runTranscript runs a console block's commands and compares what each
// prints with what the document shows.
func runTranscript(t *testing.T, work, path, state string, gw *docGateway, st docStep) {
	t.Helper()
	steps, err := parseTranscript(st.line, st.script)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range steps {
		if name, ok := strings.CutPrefix(c.command, "cat -n "); ok && !strings.ContainsAny(name, " |;&<>$") {
			if _, err := os.Stat(filepath.Join(work, name)); errors.Is(err, os.ErrNotExist) {
				var b strings.Builder
				for i, l := range c.want {
					m := catListing.FindStringSubmatch(l)
					if m == nil || m[1] != strconv.Itoa(i+1) {
						t.Fatalf("line %d: %q is not line %d of a cat -n listing", c.line+1+i, l, i+1)
					}
					b.WriteString(m[2] + "\n")
				}
				writeFile(t, filepath.Join(work, name), b.String())
				continue
			}
		}
		got := runCommand(t, work, path, state, gw, c.command)
		if *updateDocs {
			updates[c.line] = trimLines(got)
			continue
		}
		if !slices.Equal(trimLines(got), trimLines(strings.Join(c.want, "\n"))) {
			t.Errorf("line %d: $ %s\nthe document shows:\n%s\nthe command prints:\n%s", c.line, c.command, strings.Join(c.want, "\n"), got)
		}
	}
}

// trimLines splits s into lines without trailing spaces, and without the
// empty lines at its end.
func trimLines(s string) []string {
	ls := strings.Split(s, "\n")
	for i, l := range ls {
		ls[i] = strings.TrimRight(l, " \t\r")
	}
	for len(ls) > 0 && ls[len(ls)-1] == "" {
		ls = ls[:len(ls)-1]
	}
	return ls
}

// runCommand runs one transcript command as a sh block's line runs, and
// returns what it printed, stdout and stderr together. Its exit status is
// the document's to show (a check that finds errors exits 1).
func runCommand(t *testing.T, work, path, state string, gw *docGateway, command string) string {
	t.Helper()
	env := append(os.Environ(), "PATH="+path, "HOME="+work)
	if gw != nil {
		command = strings.NewReplacer("127.0.0.1:8080", gw.addr, "127.0.0.1:8081", gw.addr).Replace(command)
		env = append(env, "RULELOCK_GATEWAY=http://"+gw.addr)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	sh := exec.CommandContext(ctx, "bash", "-c", "source "+state+"\n"+command)
	sh.Dir, sh.Env = work, env
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	sh.Cancel = func() error { return syscall.Kill(-sh.Process.Pid, syscall.SIGKILL) }
	sh.WaitDelay = time.Second
	out, err := sh.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("$ %s: %v", command, err)
	}
	return string(out)
}

// splitServe splits a block at its `rulelock serve ARGS` line (a trailing
// comment dropped), if it has one: the lines before it, ARGS, the lines
// after it.
func splitServe(script string) (before, serve, after string) {
	lines := strings.Split(script, "\n")
	for i, line := range lines {
		if args, ok := strings.CutPrefix(strings.TrimSpace(line), "rulelock serve "); ok {
			args, _, _ = strings.Cut(args, "#")
			return strings.Join(lines[:i], "\n"), strings.TrimSpace(args), strings.Join(lines[i+1:], "\n")
		}
	}
	return script, "", ""
}

// keepVars returns commands that save the variables a block assigns to
// state, for the blocks after it.
func keepVars(script, state string) string {
	var b strings.Builder
	seen := map[string]bool{}
	for _, line := range strings.Split(script, "\n") {
		name, _, ok := strings.Cut(line, "=")
		if !ok || name == "" || seen[name] || strings.ContainsFunc(name, func(r rune) bool {
			return !(r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9')
		}) {
			continue
		}
		seen[name] = true
		// NAME=value cmd sets NAME for cmd only: there is nothing to keep.
		fmt.Fprintf(&b, "\ndeclare -p %s >> %s 2>/dev/null || true", name, state)
	}
	if b.Len() == 0 {
		return ""
	}
	// The block's own exit status, not the last declare's.
	return "\n__doc_rc=$?" + b.String() + "\n(exit $__doc_rc)"
}

// docGateway is a gateway a document started.
type docGateway struct {
	addr   string
	cmd    *exec.Cmd
	out    bytes.Buffer
	exited chan struct{} // closed when the process has exited
}

func startDocGateway(t *testing.T, bin, work string, st docStep) *docGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &docGateway{addr: ln.Addr().String(), exited: make(chan struct{})}
	ln.Close()
	args := append([]string{"serve"}, strings.Fields(st.serve)...)
	g.cmd = exec.Command(bin, append(args, "--listen", g.addr)...)
	g.cmd.Dir, g.cmd.Stdout, g.cmd.Stderr = work, &g.out, &g.out
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.cmd.Wait(); close(g.exited) }()
	for range 3000 {
		select {
		case <-g.exited:
			t.Fatalf("line %d: rulelock serve %s exited before it was ready:\n%s", st.line, st.serve, g.out.String())
		case <-time.After(10 * time.Millisecond):
		}
		resp, err := http.Get("http://" + g.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return g
			}
		}
	}
	t.Fatalf("line %d: rulelock serve %s never became ready:\n%s", st.line, st.serve, g.out.String())
	return nil
}

// stop stops the gateway, if there is one, and waits until it has exited.
func (g *docGateway) stop(t *testing.T) {
	if g == nil {
		return
	}
	g.cmd.Process.Signal(syscall.SIGTERM)
	<-g.exited
	if t.Failed() {
		t.Logf("rulelock serve said:\n%s", g.out.String())
	}
}
