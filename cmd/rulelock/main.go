// Command rulelock is the command-line interface of rulelock, the Trusted
// Remote Execution gateway for AI agents.
//
// Each subcommand lives in its own file as a func(ctx, env, args) error; main
// is the only place that touches the process (arguments, standard streams,
// environment, exit code).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"syscall"
)

// env is what a subcommand may use of the outside world.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands is the table of subcommands.
func commands() []command {
	var cmds []command
	cmds = append(cmds, policyCommands()...)
	cmds = append(cmds, auditCommands()...)
	cmds = append(cmds, serveCommands()...)
	cmds = append(cmds, mcpCommands()...)
	cmds = append(cmds, approvalCommands()...)
	cmds = append(cmds, exportCommands()...)
	cmds = append(cmds, replayCommands()...)
	cmds = append(cmds, bundleCommands()...)
	cmds = append(cmds, consoleCommands()...)
	cmds = append(cmds, reloadCommands()...)
	cmds = append(cmds, freezeCommands()...)
	cmds = append(cmds, tpmCommands()...)
	cmds = append(cmds, command{"version", "print rulelock's version and the revision it was built from", runVersion})
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	return cmds
}

// exitError asks main to exit with code after printing err (if any).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageError reports bad command-line usage (exit 2).
func usageError(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}, os.Args[1:])
	stop()
	os.Exit(code)
}

// run dispatches args to a subcommand and turns its error into an exit code.
// Help asked for (help, -h, --help, before any "--") goes to standard
// output and exits 0; usage after a mistake goes to standard error.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		printUsage(e.stderr)
		return 2
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		printUsage(e.stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		ce := e
		if asksHelp(args[1:]) {
			ce = &env{stdin: e.stdin, stdout: e.stdout, stderr: e.stdout, getenv: e.getenv}
		}
		err := c.run(ctx, ce, args[1:])
		if err == nil {
			return 0
		}
		var xe *exitError
		if errors.As(err, &xe) {
			if xe.err != nil {
				fmt.Fprintf(e.stderr, "rulelock %s: %v\n", c.name, xe.err)
			}
			return xe.code
		}
		fmt.Fprintf(e.stderr, "rulelock %s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintf(e.stderr, "rulelock: unknown command %q\n", args[0])
	printUsage(e.stderr)
	return 2
}

// asksHelp reports whether args ask for help (-h, -help, --help) before
// any "--": the subcommand's usage then goes to standard output.
func asksHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// runVersion prints the module version and the VCS revision rulelock was
// built from (go build records them), or "(devel)" and "unknown".
func runVersion(ctx context.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError("version takes no arguments")
	}
	version, revision, modified := "(devel)", "unknown", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision":
				revision = s.Value
			case s.Key == "vcs.modified" && s.Value == "true":
				modified = " (modified)"
			}
		}
	}
	fmt.Fprintf(e.stdout, "rulelock %s, revision %s%s\n", version, revision, modified)
	return nil
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: rulelock <command> [arguments]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
}
