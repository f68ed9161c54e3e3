package console

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/internal/testenv"
)

const npmSetup = "run scripts/setup.sh (npm ci in internal/console/web)"

// The htmx the console serves is byte for byte the file npm ci installs
// from web/package-lock.json: the vendored copy cannot drift from the
// lockfile, or be edited by hand.
func TestVendoredHTMX(t *testing.T) {
	lock, err := os.ReadFile("web/package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	var l struct {
		Packages map[string]struct{ Version, Integrity string }
	}
	if err := json.Unmarshal(lock, &l); err != nil {
		t.Fatal(err)
	}
	pin := l.Packages["node_modules/htmx.org"]
	if pin.Version == "" || !strings.HasPrefix(pin.Integrity, "sha512-") {
		t.Fatalf("package-lock.json pins htmx.org as %+v: want a version and its sha512 integrity", pin)
	}
	testenv.LookPath(t, "npm", npmSetup)
	installed := testenv.File(t, "web/node_modules/htmx.org/dist/htmx.min.js", "htmx.org installed from internal/console/web/package-lock.json", npmSetup)
	sum := sha256.Sum256(lock)
	if stamp, _ := os.ReadFile("web/node_modules/.rulelock-lock.sha256"); strings.TrimSpace(string(stamp)) != hex.EncodeToString(sum[:]) {
		testenv.Missing(t, "htmx.org installed from the current package-lock.json (node_modules is from another lockfile, or not from npm ci)", npmSetup)
	}
	var pkg struct{ Version string }
	if b, err := os.ReadFile("web/node_modules/htmx.org/package.json"); err != nil || json.Unmarshal(b, &pkg) != nil || pkg.Version != pin.Version {
		t.Fatalf("installed htmx.org is %q, the lockfile pins %q (%v)", pkg.Version, pin.Version, err)
	}
	want, err := os.ReadFile(installed)
	if err != nil {
		t.Fatal(err)
	}
	got, err := staticFS.ReadFile("static/htmx.min.js")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("static/htmx.min.js (%d bytes) differs from htmx.org %s's dist/htmx.min.js (%d bytes): copy it from web/node_modules", len(got), pin.Version, len(want))
	}
}
