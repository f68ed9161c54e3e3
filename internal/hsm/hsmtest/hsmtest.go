// Package hsmtest gives tests a fresh SoftHSM2 token.
//
// SoftHSM2 (Debian package softhsm2, installed by `make test`) is a PKCS#11
// module that keeps its tokens in files. [SoftHSM] writes a softhsm2.conf
// pointing at a temporary token directory, sets SOFTHSM2_CONF for the test,
// and initialises a token with softhsm2-util. When SoftHSM2 is missing the
// test skips locally and fails under CI=true (see internal/testenv).
package hsmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/internal/hsm"
	"github.com/rulelock/rulelock/internal/testenv"
)

// Token label and PINs of the token SoftHSM creates.
const (
	Token = "rulelock"
	PIN   = "1234"
	SOPIN = "5678"
)

const install = "apt-get install softhsm2"

// SoftHSM initialises a fresh SoftHSM2 token for t and returns a Config
// for it without a key label. It sets SOFTHSM2_CONF with t.Setenv, so t and
// its ancestors must not be parallel tests. Signers opened on it must be
// closed before t ends, so that the next test's token is read afresh.
func SoftHSM(t testing.TB) hsm.Config {
	t.Helper()
	util := testenv.LookPath(t, "softhsm2-util", install)
	module := testenv.File(t, Module(), "softhsm2 PKCS#11 module", install)

	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	text := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)

	cmd := exec.Command(util, "--init-token", "--free", "--label", Token, "--pin", PIN, "--so-pin", SOPIN)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return hsm.Config{Module: module, Token: Token, PIN: PIN}
}

// Module returns the path of the SoftHSM2 PKCS#11 module: the Debian path,
// or the one dpkg lists, or "" if neither is found.
func Module() string {
	const debian = "/usr/lib/softhsm/libsofthsm2.so"
	if _, err := os.Stat(debian); err == nil {
		return debian
	}
	out, err := exec.Command("dpkg", "-L", "libsofthsm2", "softhsm2").Output()
	if err != nil && len(out) == 0 {
		return ""
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasSuffix(line, "/libsofthsm2.so") {
			return line
		}
	}
	return ""
}

// TokenDir returns the token directory of the SoftHSM2 set up by SoftHSM
// for the running test. Moving it away makes the token disappear under a
// running signer (its sessions fail); moving it back restores it.
func TokenDir(t testing.TB) string {
	t.Helper()
	conf := os.Getenv("SOFTHSM2_CONF")
	if conf == "" {
		t.Fatal("hsmtest.TokenDir: no SOFTHSM2_CONF: call SoftHSM first")
	}
	return filepath.Join(filepath.Dir(conf), "tokens")
}
