package bundle

import "fmt"

// A Code names a class of bundle failure. Codes are stable: the gateway logs
// them and operators alert on them. A Code is also an error, so callers can
// branch with errors.Is(err, bundle.ErrExpired).
type Code string

// The failure classes.
const (
	ErrUnreadable     Code = "unreadable"      // the bundle directory or a file in it could not be read
	ErrBadManifest    Code = "bad_manifest"    // MANIFEST is missing or not in the canonical encoding
	ErrBadPath        Code = "bad_path"        // a name that is not a clean portable file name, or a case twin
	ErrNotRegular     Code = "not_regular"     // a symlink, device or other non-regular file where a file belongs
	ErrTooLarge       Code = "too_large"       // a file, the manifest, a signature or the whole bundle is over its cap
	ErrUnlistedFile   Code = "unlisted_file"   // a file in the bundle that the manifest does not list
	ErrMissingFile    Code = "missing_file"    // a file the manifest lists that the bundle does not hold
	ErrHashMismatch   Code = "hash_mismatch"   // a file whose size or SHA-256 differs from the manifest
	ErrUnsigned       Code = "unsigned"        // no signature at all
	ErrBadSignature   Code = "bad_signature"   // a malformed signature file, or a trusted key's signature that does not verify over this manifest
	ErrUnknownKey     Code = "unknown_key"     // signatures, but none by a trusted key
	ErrBelowThreshold Code = "below_threshold" // fewer distinct trusted keys signed than the threshold
	ErrExpired        Code = "expired"         // the bundle's expiry has passed
	ErrBadTrust       Code = "bad_trust"       // the trust file is not in its canonical encoding
)

func (c Code) Error() string { return string(c) }

// An Error is a bundle failure: its class, the file concerned (if any) and
// what is wrong. errors.Is(err, code) reports whether err is of class code.
type Error struct {
	Code   Code
	Path   string // the file concerned, relative to the bundle; may be empty
	Detail string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("bundle: %s: %s", e.Code, e.Detail)
	}
	return fmt.Sprintf("bundle: %s: %s: %s", e.Code, e.Path, e.Detail)
}

// Is reports whether target is e's Code.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

func errorf(code Code, path, format string, args ...any) *Error {
	return &Error{Code: code, Path: path, Detail: fmt.Sprintf(format, args...)}
}
