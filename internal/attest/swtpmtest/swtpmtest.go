// Package swtpmtest starts a real software TPM (Debian's swtpm) for tests:
// a TPM 2.0 in socket mode, its state in the test's temporary directory,
// started with TPM2_Startup(CLEAR) done, stopped when the test ends.
package swtpmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/testenv"
)

// TPM is a running swtpm.
type TPM struct {
	Socket string // the TPM command socket: attest.TPMOptions.Device
	dir    string
	cmd    *exec.Cmd
	t      testing.TB
}

// Start starts a swtpm with fresh state; missing swtpm skips the test
// locally and fails it under CI=true.
func Start(t testing.TB) *TPM {
	t.Helper()
	testenv.LookPath(t, "swtpm", "apt-get install swtpm swtpm-tools (scripts/setup.sh)")
	dir, err := os.MkdirTemp("", "swtpm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &TPM{Socket: filepath.Join(dir, "tpm.sock"), dir: dir, t: t}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *TPM) start() {
	s.t.Helper()
	os.Remove(s.Socket)
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+s.dir,
		"--server", "type=unixio,path="+s.Socket,
		"--ctrl", "type=unixio,path="+filepath.Join(s.dir, "ctrl.sock"),
		"--flags", "not-need-init,startup-clear",
		"--log", "level=1,file="+filepath.Join(s.dir, "swtpm.log"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start swtpm: %v", err)
	}
	s.cmd = cmd
	for i := 0; i < 500; i++ {
		if fi, err := os.Stat(s.Socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.stop()
	s.t.Fatalf("swtpm did not create %s", s.Socket)
}

func (s *TPM) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT) // a paused one too
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// Reboot stops the TPM and starts it again on the same state, as a machine
// reboot does: the PCRs are reset, the seeds (and so the attestation key)
// stay.
func (s *TPM) Reboot() {
	s.t.Helper()
	s.stop()
	s.start()
}

// Unplug makes the TPM unreachable while it keeps its state: its socket is
// moved aside, so a new connection fails at once (as with a device that
// went away). Plug undoes it.
func (s *TPM) Unplug() {
	s.t.Helper()
	if err := os.Rename(s.Socket, s.Socket+".unplugged"); err != nil {
		s.t.Fatal(err)
	}
}

// Plug makes an unplugged TPM reachable again, its state as it was.
func (s *TPM) Plug() {
	s.t.Helper()
	if err := os.Rename(s.Socket+".unplugged", s.Socket); err != nil {
		s.t.Fatal(err)
	}
}

// Pause stops the TPM process (SIGSTOP): commands are accepted and never
// answered, as with a TPM that hangs. Resume continues it.
func (s *TPM) Pause() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatal(err)
	}
}

// Resume continues a paused TPM (SIGCONT).
func (s *TPM) Resume() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatal(err)
	}
}
