package audit

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// LoadKeyFile loads a signing key file: the string note.GenerateKey returns
// (PRIVATE+KEY+<name>+<hash>+<key>), optionally followed by a newline. It
// refuses a file that its group or others may read or write. The signer also
// has a VerifierKey method returning its verifier key, which key custody
// (NewCheckpointer) uses.
func LoadKeyFile(path string) (note.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("load key file %s: mode %v, want no group or other access (chmod 600)", path, st.Mode().Perm())
	}
	buf := make([]byte, 4096)
	n, err := f.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("load key file %s: %w", path, err)
	}
	if n == len(buf) {
		return nil, fmt.Errorf("load key file %s: too large", path)
	}
	s, err := newFileSigner(strings.TrimSuffix(string(buf[:n]), "\n"))
	if err != nil {
		return nil, fmt.Errorf("load key file %s: %w", path, err)
	}
	return s, nil
}

// ParseVerifierKey parses a verifier key in note format
// (<name>+<hash>+<base64 key>), optionally followed by a newline.
func ParseVerifierKey(vkey string) (note.Verifier, error) {
	v, err := note.NewVerifier(strings.TrimSpace(vkey))
	if err != nil {
		return nil, fmt.Errorf("parse verifier key: %w", err)
	}
	return v, nil
}
