package fsx

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "LOCK")
	f, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock: got %v, want ErrLocked", err)
	}
	f.Close()
	g, err := Lock(path)
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	g.Close()
}

func TestPreallocateDatasync(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "seg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Preallocate(f, 0, 3<<20+5); err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	if st.Size() != 3<<20+5 {
		t.Fatalf("size %d, want %d", st.Size(), 3<<20+5)
	}
	if _, err := f.WriteAt([]byte("x"), 10); err != nil {
		t.Fatal(err)
	}
	if err := Datasync(f); err != nil {
		t.Fatal(err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	for _, s := range []string{"one", "two"} {
		if err := WriteFileAtomic(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		if string(b) != s {
			t.Fatalf("got %q, want %q", b, s)
		}
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
}

func TestWriteNewFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	if err := WriteNewFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteNewFile(path, []byte("two"), 0o600); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second WriteNewFile: got %v, want os.ErrExist", err)
	}
	b, _ := os.ReadFile(path)
	if string(b) != "one" {
		t.Fatalf("got %q, want %q", b, "one")
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d files, want only the key (no temporary file left)", len(ents))
	}
}

// TestCreateSynced: the file holds the data with the mode asked for, and an
// existing file is never replaced.
func TestCreateSynced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := CreateSynced(path, []byte("one"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := CreateSynced(path, []byte("two"), 0o444); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second create: %v, want os.ErrExist", err)
	}
	got, err := os.ReadFile(path)
	fi, _ := os.Stat(path)
	if err != nil || string(got) != "one" || fi.Mode().Perm() != 0o444 {
		t.Fatalf("file holds %q (%v), mode %v; want \"one\", 0444", got, err, fi.Mode().Perm())
	}
}
