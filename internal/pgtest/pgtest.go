// Package pgtest starts a throwaway PostgreSQL cluster for tests that need
// a real one (internal/pglog).
//
// New runs initdb and postgres from the PATH, or from Debian's
// /usr/lib/postgresql/<version>/bin, in a fresh temporary directory. The
// server listens on a Unix socket in that directory only (no TCP), trusts
// local connections, and is stopped and removed when the test ends.
// PostgreSQL refuses to run as root, so when the test runs as root the
// cluster runs as the unprivileged user nobody, which owns the directory.
//
//	c := pgtest.New(t)
//	pool, err := pgxpool.New(ctx, c.DSN())
//	...
//	c.Kill()  // kill -9: a crash
//	c.Start() // recovery, same data, same DSN
//
// When PostgreSQL is not installed the test skips loudly, and fails under
// CI=true (internal/testenv); scripts/setup.sh installs it.
package pgtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/testenv"
)

const install = "apt-get install postgresql (Debian puts initdb in /usr/lib/postgresql/<version>/bin)"

// Cluster is a running (or stopped) throwaway PostgreSQL cluster.
type Cluster struct {
	t    testing.TB
	bin  string // directory of initdb and postgres
	dir  string // owns data/ and the socket
	cred *syscall.Credential

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error // receives cmd's exit
	out    *os.File
}

// New initialises and starts a cluster for t, and stops it and removes its
// files when t ends.
func New(t testing.TB) *Cluster {
	t.Helper()
	bin := findBin(t)
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	c := &Cluster{t: t, bin: bin, dir: dir}
	t.Cleanup(func() {
		c.stop(syscall.SIGQUIT) // immediate shutdown: the data is thrown away
		os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		c.cred = nobody(t)
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	cmd := c.command(filepath.Join(bin, "initdb"), "-D", c.data(), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-instructions")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	c.Start()
	return c
}

// DSN returns the connection string of the cluster's postgres database.
func (c *Cluster) DSN() string {
	return fmt.Sprintf("host=%s port=5432 user=postgres dbname=postgres sslmode=disable", c.dir)
}

// Pid returns the postmaster's process id, 0 while the server is stopped
// (benchmarks read the CPU time of it and its backends).
func (c *Cluster) Pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// Its own process group: a signal to the test's group (^C) is not
	// PostgreSQL's. (Its backends call setsid: Kill finds them by parent.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.cred}
	return cmd
}

// Start starts the server (again, after Stop or Kill) and waits until it
// accepts connections.
func (c *Cluster) Start() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		c.t.Fatal("pgtest: start: already running")
	}
	out, err := os.OpenFile(filepath.Join(c.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatalf("pgtest: %v", err)
	}
	cmd := c.command(filepath.Join(c.bin, "postgres"), "-D", c.data(),
		"-c", "listen_addresses=", "-c", "unix_socket_directories="+c.dir,
		"-c", "max_connections=100", "-c", "shared_buffers=16MB")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		c.t.Fatalf("pgtest: start postgres: %v", err)
	}
	c.cmd, c.out = cmd, out
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Ready when its postmaster.pid file says so (its 8th line), as pg_ctl
	// waits; a file a killed server left behind names another pid.
	for range 600 {
		select {
		case err := <-exited:
			c.cmd = nil
			c.t.Fatalf("pgtest: postgres exited at start: %v\n%s", err, c.logTail())
		default:
		}
		if b, err := os.ReadFile(filepath.Join(c.data(), "postmaster.pid")); err == nil {
			lines := strings.Split(string(b), "\n")
			if len(lines) > 7 && lines[0] == strconv.Itoa(cmd.Process.Pid) && strings.TrimSpace(lines[7]) == "ready" {
				c.exited = exited
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("pgtest: postgres not ready after 30s\n%s", c.logTail())
}

// Stop shuts the server down cleanly (fast shutdown: open connections are
// closed) and waits for it to exit.
func (c *Cluster) Stop() { c.t.Helper(); c.stop(syscall.SIGINT) }

// Kill kills the server and every one of its processes with SIGKILL, as a
// crash of the machine would: no backend answers another query, and Start
// recovers from the write-ahead log.
func (c *Cluster) Kill() { c.t.Helper(); c.stop(syscall.SIGKILL) }

func (c *Cluster) stop(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	pid := c.cmd.Process.Pid
	if sig != syscall.SIGKILL {
		syscall.Kill(pid, sig)
		<-c.exited
		c.closed()
		return
	}
	// Killing the postmaster alone leaves its backends running (they
	// notice its death only later, and meanwhile serve and commit on
	// their connections): freeze it so that it forks no more, kill its
	// children, then it.
	syscall.Kill(pid, syscall.SIGSTOP)
	kids := children(pid)
	for _, k := range kids {
		syscall.Kill(k, syscall.SIGKILL)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	<-c.exited
	for _, k := range kids {
		for alive(k) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	c.closed()
}

func (c *Cluster) closed() {
	c.out.Close()
	c.cmd, c.exited, c.out = nil, nil, nil
}

// children returns the processes whose parent is pid (from /proc).
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range ents {
		k, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, ok := stat(k); ok && ppid == pid {
			kids = append(kids, k)
		}
	}
	return kids
}

// alive reports whether process pid exists and is not a zombie (a killed
// child of the dead postmaster that nobody reaps is one).
func alive(pid int) bool {
	_, state, ok := stat(pid)
	return ok && state != "Z" && state != "X"
}

// stat returns the parent and state of process pid from /proc/<pid>/stat.
func stat(pid int) (ppid int, state string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", false
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, "", false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, "", false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0], err == nil
}

func (c *Cluster) logTail() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "postgres.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// findBin returns the directory of initdb and postgres: from the PATH, or
// the newest of Debian's /usr/lib/postgresql/<version>/bin.
func findBin(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("initdb"); err == nil {
		if p, err := filepath.EvalSymlinks(p); err == nil {
			if _, err := os.Stat(filepath.Join(filepath.Dir(p), "postgres")); err == nil {
				return filepath.Dir(p)
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	testenv.Missing(t, "PostgreSQL (initdb, postgres)", install)
	return ""
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// nobody returns the credentials of the user nobody, for running
// PostgreSQL when the tests run as root.
func nobody(t testing.TB) *syscall.Credential {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("pgtest: running as root and %v; PostgreSQL refuses to run as root", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("pgtest: user nobody: %v", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
}
