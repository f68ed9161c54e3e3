package hsm

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/miekg/pkcs11"
)

// A PKCS#11 module is initialised once per process (a second C_Initialize
// fails), C_Finalize ends it for every user, and logging in is per token for
// the whole process, not per session: logging in on one session logs in all,
// and closing a token's last session logs out. So the modules in use, and
// who is logged in to which token, are process-wide facts. This registry is
// the one place that tracks them; it is unexported and holds no
// configuration.
var modules = struct {
	sync.Mutex
	byPath map[string]*module
}{byPath: make(map[string]*module)}

// A module is one loaded PKCS#11 library, shared by the Signers that use it.
type module struct {
	path     string // canonical path, the registry key
	ctx      *pkcs11.Ctx
	refs     int             // guarded by modules
	finalize bool            // whether we initialised it, so must finalise it
	logins   map[uint]*login // by slot; guarded by modules
}

// A login is the user login to one token, held while any session is open.
type login struct {
	pin      [sha256.Size]byte // digest of the PIN that logged in
	sessions int
}

// loadModule loads and initialises the module at path, or takes another
// reference to it if it is loaded already. The caller must release it.
func loadModule(path string) (*module, error) {
	canon, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("load pkcs11 module: %w", err)
	}
	modules.Lock()
	defer modules.Unlock()
	if m := modules.byPath[canon]; m != nil {
		m.refs++
		return m, nil
	}
	ctx := pkcs11.New(canon)
	if ctx == nil {
		return nil, fmt.Errorf("load pkcs11 module %q: not a loadable PKCS#11 library", path)
	}
	m := &module{path: canon, ctx: ctx, refs: 1, finalize: true, logins: make(map[uint]*login)}
	if err := ctx.Initialize(); err != nil {
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			ctx.Destroy()
			return nil, fmt.Errorf("initialize pkcs11 module %q: %w", path, err)
		}
		m.finalize = false // someone else in the process initialised it
	}
	modules.byPath[canon] = m
	return m, nil
}

// release drops a reference; the last one finalises and unloads the module.
func (m *module) release() {
	modules.Lock()
	defer modules.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(modules.byPath, m.path)
	if m.finalize {
		m.ctx.Finalize()
	}
	m.ctx.Destroy()
}

// findToken returns the slot of the one token labelled label.
func (m *module) findToken(label string) (uint, error) {
	slots, err := m.ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("list slots: %w", err)
	}
	var found []uint
	for _, slot := range slots {
		info, err := m.ctx.GetTokenInfo(slot)
		if err != nil {
			return 0, fmt.Errorf("token info of slot %d: %w", slot, err)
		}
		if info.Label == label {
			found = append(found, slot)
		}
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("token %q: %w", label, ErrTokenNotFound)
	case 1:
		return found[0], nil
	}
	return 0, fmt.Errorf("token %q: %d tokens have this label", label, len(found))
}

// openSession opens a session on slot logged in as the user with pin.
// When the token is logged in already (through another of our sessions)
// the PIN must be the one that logged in: the token would not check it.
func (m *module) openSession(slot uint, pin string, rw bool) (pkcs11.SessionHandle, error) {
	flags := uint(pkcs11.CKF_SERIAL_SESSION)
	if rw {
		flags |= pkcs11.CKF_RW_SESSION
	}
	modules.Lock()
	defer modules.Unlock()
	sh, err := m.ctx.OpenSession(slot, flags)
	if err != nil {
		return 0, fmt.Errorf("open session: %w", err)
	}
	digest := sha256.Sum256([]byte(pin))
	if l := m.logins[slot]; l != nil {
		if subtle.ConstantTimeCompare(l.pin[:], digest[:]) != 1 {
			m.ctx.CloseSession(sh)
			return 0, fmt.Errorf("login: %w", ErrPIN)
		}
		l.sessions++
		return sh, nil
	}
	if err := m.ctx.Login(sh, pkcs11.CKU_USER, pin); err != nil {
		m.ctx.CloseSession(sh)
		switch {
		case errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)),
			errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_LEN_RANGE)):
			return 0, fmt.Errorf("login: %w", ErrPIN)
		case errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)):
			return 0, errors.New("login: token is logged in by other code in this process, so the pin cannot be checked")
		}
		return 0, fmt.Errorf("login: %w", err)
	}
	m.logins[slot] = &login{pin: digest, sessions: 1}
	return sh, nil
}

// closeSession closes a session opened by openSession.
func (m *module) closeSession(slot uint, sh pkcs11.SessionHandle) error {
	modules.Lock()
	defer modules.Unlock()
	if l := m.logins[slot]; l != nil {
		l.sessions--
		if l.sessions == 0 {
			delete(m.logins, slot) // closing the last session logs out
		}
	}
	return m.ctx.CloseSession(sh)
}
