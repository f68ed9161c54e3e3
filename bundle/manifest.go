package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rulelock/rulelock/policy"
)

// Limits on what a bundle may hold. Anything over them is rejected, never
// truncated.
const (
	MaxFileSize      = 4 << 20  // bytes per policy, data or test file
	MaxTotalSize     = 32 << 20 // bytes over all the files
	MaxFiles         = 1000     // files listed in a manifest
	MaxManifestSize  = 1 << 20  // bytes of MANIFEST
	MaxSignatureSize = 16 << 10 // bytes per signature file
	MaxSignatures    = 100      // signature files
	maxNameLen       = 128      // bytes in a file or bundle name
)

const (
	manifestHeader = "rulelock bundle v1"
	timeLayout     = "2006-01-02T15:04:05Z"
)

// A Manifest describes a bundle: its name, version, creation time, optional
// expiry and every file with its size and SHA-256. Its one encoding is
// Marshal's; ParseManifest accepts nothing else.
type Manifest struct {
	Name    string
	Version uint64    // at least 1; the gateway activates only increasing versions
	Created time.Time // UTC, whole seconds
	Expires time.Time // zero: never; otherwise UTC, whole seconds, after Created
	Files   []File    // sorted by Path, at least one .rules file
}

// A File is one file of a bundle.
type File struct {
	Path   string // a clean portable file name at the bundle's root
	Size   int64
	SHA256 [sha256.Size]byte
}

// NewManifest returns the manifest of files, checking everything
// ParseManifest checks. Created and Expires are converted to UTC and must be
// whole seconds.
func NewManifest(name string, version uint64, created, expires time.Time, files []policy.Source) (*Manifest, error) {
	m := &Manifest{Name: name, Version: version, Created: created.UTC()}
	if !expires.IsZero() {
		m.Expires = expires.UTC()
	}
	for _, f := range files {
		m.Files = append(m.Files, File{Path: f.Name, Size: int64(len(f.Data)), SHA256: sha256.Sum256(f.Data)})
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
	text := m.Marshal()
	back, err := ParseManifest(text)
	if err != nil {
		return nil, err
	}
	if !back.Created.Equal(m.Created) || !back.Expires.Equal(m.Expires) {
		return nil, errorf(ErrBadManifest, "MANIFEST", "times must be whole seconds")
	}
	return back, nil
}

// Marshal returns the canonical encoding of m:
//
//	rulelock bundle v1
//	name <name>
//	version <decimal>
//	created <YYYY-MM-DDTHH:MM:SSZ>
//	expires <YYYY-MM-DDTHH:MM:SSZ>            (only if set)
//	file sha256:<64 lowercase hex> <size> <path>  (one per file, sorted by path)
func (m *Manifest) Marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nname %s\nversion %d\ncreated %s\n", manifestHeader, m.Name, m.Version, m.Created.UTC().Format(timeLayout))
	if !m.Expires.IsZero() {
		fmt.Fprintf(&b, "expires %s\n", m.Expires.UTC().Format(timeLayout))
	}
	for _, f := range m.Files {
		fmt.Fprintf(&b, "file sha256:%x %d %s\n", f.SHA256, f.Size, f.Path)
	}
	return b.Bytes()
}

// Digest returns the bundle digest: "sha256:" and the lowercase hex SHA-256
// of the manifest's encoding. It names the bundle in the audit log.
func (m *Manifest) Digest() string {
	return digest(m.Marshal())
}

func digest(text []byte) string {
	sum := sha256.Sum256(text)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParseManifest parses a manifest in its canonical encoding. Anything else
// (another line order, extra white space, a non-canonical number or time, an
// unsorted or duplicate path, a path that is not a clean portable name) is an
// *Error whose Detail starts with MANIFEST:line.
func ParseManifest(text []byte) (*Manifest, error) {
	if len(text) > MaxManifestSize {
		return nil, errorf(ErrTooLarge, "MANIFEST", "%d bytes, over the %d-byte cap", len(text), MaxManifestSize)
	}
	if len(text) == 0 || text[len(text)-1] != '\n' {
		return nil, errorf(ErrBadManifest, "MANIFEST", "does not end in a newline")
	}
	p := &manifestParser{lines: strings.Split(string(text[:len(text)-1]), "\n")}
	m, err := p.parse()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(m.Marshal(), text) { // every check above should make this unreachable
		return nil, errorf(ErrBadManifest, "MANIFEST", "not in canonical form")
	}
	return m, nil
}

type manifestParser struct {
	lines []string
	n     int // lines consumed
}

func (p *manifestParser) errorf(code Code, format string, args ...any) error {
	return errorf(code, "MANIFEST", "line %d: %s", p.n, fmt.Sprintf(format, args...))
}

// next consumes the next line and returns its value if it starts with key
// and a space.
func (p *manifestParser) next(key string) (string, bool) {
	if p.n >= len(p.lines) {
		p.n++
		return "", false
	}
	p.n++
	return strings.CutPrefix(p.lines[p.n-1], key+" ")
}

// peek reports whether the next line starts with key and a space.
func (p *manifestParser) peek(key string) bool {
	return p.n < len(p.lines) && strings.HasPrefix(p.lines[p.n], key+" ")
}

func (p *manifestParser) parse() (*Manifest, error) {
	m := &Manifest{}
	if p.n = 1; p.lines[0] != manifestHeader {
		return nil, p.errorf(ErrBadManifest, "want %q", manifestHeader)
	}
	var err error
	v, ok := p.next("name")
	if !ok || !validName(v) {
		return nil, p.errorf(ErrBadManifest, "want name NAME (1-%d of A-Z a-z 0-9 . _ -, not starting with . or -)", maxNameLen)
	}
	m.Name = v
	if v, ok = p.next("version"); !ok {
		return nil, p.errorf(ErrBadManifest, "want version N")
	}
	if m.Version, err = parseUint(v); err != nil || m.Version == 0 {
		return nil, p.errorf(ErrBadManifest, "version %q: want a decimal integer from 1, no leading zeros", v)
	}
	if v, ok = p.next("created"); !ok {
		return nil, p.errorf(ErrBadManifest, "want created TIME")
	}
	if m.Created, err = parseTime(v); err != nil {
		return nil, p.errorf(ErrBadManifest, "created: %v", err)
	}
	if p.peek("expires") {
		v, _ = p.next("expires")
		if m.Expires, err = parseTime(v); err != nil {
			return nil, p.errorf(ErrBadManifest, "expires: %v", err)
		}
		if !m.Expires.After(m.Created) {
			return nil, p.errorf(ErrBadManifest, "expires %s is not after created", v)
		}
	}
	return m, p.files(m)
}

func (p *manifestParser) files(m *Manifest) error {
	var total int64
	folded := map[string]string{}
	hasRules := false
	for p.n < len(p.lines) {
		v, ok := p.next("file")
		if !ok {
			return p.errorf(ErrBadManifest, "want file sha256:HEX SIZE PATH")
		}
		f, err := parseFile(v)
		if err != nil {
			return p.errorf(ErrBadManifest, "%v", err)
		}
		if f.Size > MaxFileSize {
			return p.errorf(ErrTooLarge, "%s: %d bytes, over the %d-byte cap", f.Path, f.Size, MaxFileSize)
		}
		if err := checkName(f.Path); err != nil {
			return p.errorf(ErrBadPath, "%v", err)
		}
		if !policy.IsPolicyFile(f.Path) && !policy.IsTestFile(f.Path) {
			return p.errorf(ErrBadPath, "%s is not a policy, data or test file", f.Path)
		}
		if n := len(m.Files); n > 0 && f.Path <= m.Files[n-1].Path {
			return p.errorf(ErrBadManifest, "%s: files must be sorted by path, without duplicates", f.Path)
		}
		if twin, ok := folded[strings.ToLower(f.Path)]; ok {
			return p.errorf(ErrBadPath, "%s and %s differ only in case", twin, f.Path)
		}
		folded[strings.ToLower(f.Path)] = f.Path
		if len(m.Files) == MaxFiles {
			return p.errorf(ErrTooLarge, "more than %d files", MaxFiles)
		}
		if total += f.Size; total > MaxTotalSize {
			return p.errorf(ErrTooLarge, "files total over %d bytes", MaxTotalSize)
		}
		hasRules = hasRules || strings.HasSuffix(f.Path, ".rules")
		m.Files = append(m.Files, f)
	}
	if !hasRules {
		return p.errorf(ErrBadManifest, "no .rules file")
	}
	return nil
}

// parseFile parses "sha256:HEX SIZE PATH".
func parseFile(s string) (File, error) {
	var f File
	parts := strings.Split(s, " ")
	if len(parts) != 3 {
		return f, fmt.Errorf("want file sha256:HEX SIZE PATH")
	}
	h, ok := strings.CutPrefix(parts[0], "sha256:")
	if !ok || len(h) != 2*sha256.Size || strings.ToLower(h) != h {
		return f, fmt.Errorf("hash %q: want sha256: and 64 lowercase hex digits", parts[0])
	}
	if _, err := hex.Decode(f.SHA256[:], []byte(h)); err != nil {
		return f, fmt.Errorf("hash %q: want sha256: and 64 lowercase hex digits", parts[0])
	}
	size, err := parseUint(parts[1])
	if err != nil || size > 1<<62 {
		return f, fmt.Errorf("size %q: want a decimal integer, no leading zeros", parts[1])
	}
	f.Size, f.Path = int64(size), parts[2]
	return f, nil
}

// parseUint parses a canonical decimal: digits only, no sign, no leading zero.
func parseUint(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != s {
		return 0, fmt.Errorf("not a canonical decimal integer")
	}
	return n, nil
}

// parseTime parses a canonical RFC 3339 UTC time in whole seconds.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil || t.Format(timeLayout) != s {
		return time.Time{}, fmt.Errorf("%q: want YYYY-MM-DDTHH:MM:SSZ (RFC 3339, UTC, whole seconds)", s)
	}
	return t, nil
}

// checkName reports whether name is a clean portable file name: 1-128
// characters of the POSIX portable file name set (A-Z a-z 0-9 . _ -), not
// starting with '.' or '-'. That rules out ./a, ../a, /a, a/b, a\b, NUL,
// white space, and every non-ASCII name, so no two names can differ only in
// Unicode normalisation; case twins are checked where names meet.
func checkName(name string) error {
	if !validName(name) {
		return fmt.Errorf("%q is not a clean file name (1-%d of A-Z a-z 0-9 . _ -, not starting with . or -)", name, maxNameLen)
	}
	return nil
}

func validName(name string) bool {
	if name == "" || len(name) > maxNameLen || name[0] == '.' || name[0] == '-' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
