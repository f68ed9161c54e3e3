package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// BreakDir makes the directory dir refuse new files, with a real fault, and
// returns a function that mends it and says which fault it used. It first
// takes away write permission (chmod 0500); when that does not stop a
// write — the tests run as root, or on a file system without permissions —
// it moves the directory aside and puts a regular file in its place, so
// that creating anything in it fails with ENOTDIR. Mending restores the
// directory, with its contents, as it was.
func BreakDir(t testing.TB, dir string) (mend func(), how string) {
	t.Helper()
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatalf("break %s: %v", dir, err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatalf("break %s: %v", dir, err)
	}
	probe, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return func() {
			if err := os.Chmod(dir, st.Mode().Perm()); err != nil {
				t.Errorf("mend %s: %v", dir, err)
			}
		}, "chmod 0500"
	}
	// Permissions do not stop this process: replace the directory.
	probe.Close()
	os.Remove(probe.Name())
	if err := os.Chmod(dir, st.Mode().Perm()); err != nil {
		t.Fatalf("break %s: %v", dir, err)
	}
	aside := filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".aside")
	if err := os.Rename(dir, aside); err != nil {
		t.Fatalf("break %s: %v", dir, err)
	}
	if err := os.WriteFile(dir, []byte("not a directory\n"), 0o600); err != nil {
		t.Fatalf("break %s: %v", dir, err)
	}
	return func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("mend %s: %v", dir, err)
		}
		if err := os.Rename(aside, dir); err != nil {
			t.Errorf("mend %s: %v", dir, err)
		}
	}, "directory replaced by a file"
}
