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

// CA is swtpm's local CA (swtpm_localca), which signs the EK certificates
// swtpm_setup writes into a TPM's NV: a test double for a TPM
// manufacturer's CA (a root, and an issuing CA under it).
type CA struct {
	dir  string
	conf string // swtpm_setup's configuration, naming this CA
	t    testing.TB
}

// NewCA makes an empty local CA; its keys are created with the first EK
// certificate. Missing swtpm_setup skips the test locally and fails it
// under CI=true.
func NewCA(t testing.TB) *CA {
	t.Helper()
	testenv.LookPath(t, "swtpm_setup", "apt-get install swtpm-tools (scripts/setup.sh)")
	tool := testenv.LookPath(t, "swtpm_localca", "apt-get install swtpm-tools (scripts/setup.sh)")
	dir := t.TempDir()
	c := &CA{dir: dir, conf: filepath.Join(dir, "swtpm_setup.conf"), t: t}
	localca := filepath.Join(dir, "swtpm-localca.conf")
	write := func(name, text string) {
		if err := os.WriteFile(name, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(localca, "statedir = "+dir+"\nsigningkey = "+filepath.Join(dir, "signkey.pem")+
		"\nissuercert = "+filepath.Join(dir, "issuercert.pem")+"\ncertserial = "+filepath.Join(dir, "certserial")+"\n")
	write(filepath.Join(dir, "swtpm-localca.options"), "--platform-manufacturer rulelock-test\n--platform-version 2.1\n--platform-model swtpm\n")
	write(c.conf, "create_certs_tool = "+tool+"\ncreate_certs_tool_config = "+localca+
		"\ncreate_certs_tool_options = "+filepath.Join(dir, "swtpm-localca.options")+"\nactive_pcr_banks = sha256\n")
	return c
}

// Root returns the CA's root certificate (PEM): what a verifier pins.
func (c *CA) Root() []byte { return c.read("swtpm-localca-rootca-cert.pem") }

// Issuer returns the certificate of the CA that signs EK certificates
// (PEM), issued by the root.
func (c *CA) Issuer() []byte { return c.read("issuercert.pem") }

func (c *CA) read(name string) []byte {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, name))
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// StartWithEK manufactures a TPM as swtpm_setup does (an RSA and an ECC
// EK, their certificates signed by ca in NV) and starts it.
func StartWithEK(t testing.TB, ca *CA) *TPM {
	t.Helper()
	testenv.LookPath(t, "swtpm", "apt-get install swtpm swtpm-tools (scripts/setup.sh)")
	dir, err := os.MkdirTemp("", "swtpm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	out, err := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", dir, "--create-ek-cert", "--config", ca.conf).CombinedOutput()
	if err != nil {
		t.Fatalf("swtpm_setup: %v\n%s", err, out)
	}
	s := &TPM{Socket: filepath.Join(dir, "tpm.sock"), dir: dir, t: t}
	s.start()
	t.Cleanup(s.stop)
	return s
}
