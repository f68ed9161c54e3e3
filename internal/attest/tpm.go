package attest

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// The default PCRs of the TPM provider. Both are PC Client "OS" PCRs that
// no reset command clears before a reboot (unlike 16 and 23). Deployments
// whose boot chain uses them pick others (TPMOptions).
const (
	DefaultIdentityPCR = 15 // the engine digest, then the per-boot key
	DefaultBundlePCR   = 14 // every bundle activated, in order
)

// TPMOptions configure OpenTPM. The zero value of the PCR fields means the
// defaults.
type TPMOptions struct {
	// Device is the TPM: a character device (/dev/tpmrm0) or the Unix
	// socket of a software TPM (swtpm socket --server type=unixio,...).
	Device      string
	IdentityPCR uint
	BundlePCR   uint
	// Timeout bounds each command to a software TPM's socket (default
	// DefaultTPMTimeout): a TPM that stops answering fails the command
	// rather than hanging the engine. A character device has the
	// kernel driver's own timeouts.
	Timeout time.Duration
}

// DefaultTPMTimeout is TPMOptions.Timeout's default.
const DefaultTPMTimeout = 10 * time.Second

// TPM is the TPM 2.0 provider. The engine measures itself into it (the
// TPM cannot: only the boot chain measures on its own, and it does not
// reach an application), so a TPM proves what was measured into the
// identity PCR since the recorded start value, and that nothing was
// measured there since; docs/attestation.md says why that is weaker than
// a confidential VM.
//
// Its methods are safe for concurrent use.
type TPM struct {
	mu   sync.Mutex
	tpm  transport.TPMCloser
	pcrs [2]uint // identity, bundle
	ak   tpm2.TPMHandle
	akN  tpm2.TPM2BName
	akP  []byte // TPMT_PUBLIC of the attestation key
	srk  tpm2.TPMHandle
	srkN tpm2.TPM2BName
	log  EventLog
}

// OpenTPM opens the TPM at opts.Device, creates its attestation key (an
// ECDSA P-256 restricted signing key, a primary key of the endorsement
// hierarchy: the same key every time for the same TPM, so a verifier pins
// it once) and records the PCRs' current values as the event log's start.
func OpenTPM(opts TPMOptions) (*TPM, error) {
	t := &TPM{pcrs: [2]uint{opts.IdentityPCR, opts.BundlePCR}}
	if t.pcrs[0] == 0 {
		t.pcrs[0] = DefaultIdentityPCR
	}
	if t.pcrs[1] == 0 {
		t.pcrs[1] = DefaultBundlePCR
	}
	if t.pcrs[0] == t.pcrs[1] || t.pcrs[0] > 23 || t.pcrs[1] > 23 {
		return nil, fmt.Errorf("tpm: PCRs %d and %d: want two distinct PCRs 0..23", t.pcrs[0], t.pcrs[1])
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTPMTimeout
	}
	dev, err := openDevice(opts.Device, opts.Timeout)
	if err != nil {
		return nil, err
	}
	t.tpm = dev
	if err := t.init(); err != nil {
		dev.Close()
		return nil, err
	}
	return t, nil
}

func openDevice(path string, timeout time.Duration) (transport.TPMCloser, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tpm: %w", err)
	}
	if fi.Mode()&os.ModeSocket != 0 {
		return socketTPM{path: path, timeout: timeout}, nil
	}
	d, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tpm: open %s: %w", path, err)
	}
	return d, nil
}

// socketTPM is a software TPM's command socket (swtpm socket --server
// type=unixio): one connection per command, as swtpm serves it, each
// bounded by a deadline. (go-tpm's linuxudstpm has no deadline: a TPM
// that stops answering would hang the command, and the engine with it.)
type socketTPM struct {
	path    string
	timeout time.Duration
}

// maxTPMResponse bounds a response; TPM 2.0 responses fit in 4 KiB.
const maxTPMResponse = 64 << 10

// Send implements transport.TPM.
func (s socketTPM) Send(cmd []byte) ([]byte, error) {
	c, err := net.DialTimeout("unix", s.path, s.timeout)
	if err != nil {
		return nil, fmt.Errorf("tpm: %w", err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(s.timeout)); err != nil {
		return nil, fmt.Errorf("tpm: %w", err)
	}
	if _, err := c.Write(cmd); err != nil {
		return nil, fmt.Errorf("tpm: send: %w", err)
	}
	// A response is a 10-byte header (tag, size, code), the size covering
	// the whole response, and its parameters.
	var hdr [10]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, fmt.Errorf("tpm: receive: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[2:6])
	if n < uint32(len(hdr)) || n > maxTPMResponse {
		return nil, fmt.Errorf("tpm: receive: response size %d", n)
	}
	rsp := make([]byte, n)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(c, rsp[len(hdr):]); err != nil {
		return nil, fmt.Errorf("tpm: receive: %w", err)
	}
	return rsp, nil
}

// Close implements transport.TPMCloser: each command's connection is
// closed with it.
func (socketTPM) Close() error { return nil }

func (t *TPM) init() error {
	ak, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(akTemplate)}.Execute(t.tpm)
	if err != nil {
		return fmt.Errorf("tpm: create attestation key: %w", err)
	}
	pub, err := ak.OutPublic.Contents()
	if err != nil {
		return fmt.Errorf("tpm: attestation key: %w", err)
	}
	t.ak, t.akN, t.akP = ak.ObjectHandle, ak.Name, tpm2.Marshal(*pub)
	srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(t.tpm)
	if err != nil {
		return fmt.Errorf("tpm: create storage key: %w", err)
	}
	t.srk, t.srkN = srk.ObjectHandle, srk.Name
	start, err := t.readPCRs()
	if err != nil {
		return err
	}
	t.log = EventLog{PCRs: t.pcrs, Start: start}
	return nil
}

// akTemplate is the attestation key: ECDSA P-256 with SHA-256, restricted
// (it signs only TPM-made structures such as quotes).
var akTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, NoDA: true, Restricted: true, SignEncrypt: true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		CurveID: tpm2.TPMECCNistP256,
		KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
		Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
	}),
}

// Name implements Provider.
func (t *TPM) Name() string { return "tpm" }

// Close flushes the TPM's keys and closes the device.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, h := range []tpm2.TPMHandle{t.ak, t.srk} {
		if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(t.tpm); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, t.tpm.Close())
	return errors.Join(errs...)
}

// AttestationKey returns the SHA-256 of the attestation key's public key
// (PKIX DER): what a verifier's policy pins.
func (t *TPM) AttestationKey() (string, error) {
	return akPin(t.akP)
}

// Measure appends an event to the log and extends its digest into the
// event's PCR: EventEngine and EventKey go to the identity PCR,
// EventBundle to the bundle PCR.
func (t *TPM) Measure(kind EventKind, data string) error {
	ev := Event{Kind: kind, Data: data}
	if err := ev.check(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.extend(t.log.pcrOf(kind), ev.Digest()); err != nil {
		return err
	}
	t.log.Events = append(t.log.Events, ev)
	return nil
}

func (t *TPM) extend(pcr uint, d [sha256.Size]byte) error {
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
	}.Execute(t.tpm)
	if err != nil {
		return fmt.Errorf("tpm: extend PCR %d: %w", pcr, err)
	}
	return nil
}

// Extend extends an arbitrary digest into a PCR without recording it: what
// any other process with access to the TPM can do. It exists for tests
// that play that process.
func (t *TPM) Extend(pcr uint, d [sha256.Size]byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.extend(pcr, d)
}

// Log returns a copy of the event log.
func (t *TPM) Log() EventLog {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.log
	l.Events = append([]Event(nil), t.log.Events...)
	return l
}

func (t *TPM) selection() tpm2.TPMLPCRSelection {
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(t.pcrs[0], t.pcrs[1]),
	}}}
}

// readPCRs returns the identity and bundle PCRs' values.
func (t *TPM) readPCRs() ([2][sha256.Size]byte, error) {
	var out [2][sha256.Size]byte
	rsp, err := tpm2.PCRRead{PCRSelectionIn: t.selection()}.Execute(t.tpm)
	if err != nil {
		return out, fmt.Errorf("tpm: read PCRs: %w", err)
	}
	if len(rsp.PCRValues.Digests) != 2 {
		return out, fmt.Errorf("tpm: read PCRs: %d values, want 2", len(rsp.PCRValues.Digests))
	}
	// The TPM returns the values in ascending PCR order.
	lo, hi := rsp.PCRValues.Digests[0].Buffer, rsp.PCRValues.Digests[1].Buffer
	if t.pcrs[0] > t.pcrs[1] {
		lo, hi = hi, lo
	}
	if len(lo) != sha256.Size || len(hi) != sha256.Size {
		return out, errors.New("tpm: read PCRs: not SHA-256 values")
	}
	copy(out[0][:], lo)
	copy(out[1][:], hi)
	return out, nil
}

// Attest implements Provider: a quote of the identity and bundle PCRs by
// the attestation key with reportData as extraData. The collateral is the
// attestation key's public area and the event log.
func (t *TPM) Attest(reportData ReportData) (Evidence, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rsp, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: t.ak, Name: t.akN, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: reportData[:]},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      t.selection(),
	}.Execute(t.tpm)
	if err != nil {
		return Evidence{}, fmt.Errorf("tpm: quote: %w", err)
	}
	q := tpmQuote{Attest: rsp.Quoted.Bytes(), Signature: tpm2.Marshal(rsp.Signature)}
	c := tpmCollateral{AK: t.akP, Log: t.log}
	return Evidence{Provider: t.Name(), Report: q.marshal(), Collateral: c.marshal()}, nil
}

// Check implements Checker: ev verifies as VerifyTPM would, with this
// TPM's attestation key as the only pinned key. A rogue extend of either
// PCR, or a TPM reset since it was opened, fails it.
func (t *TPM) Check(ev Evidence, stmt *Statement) error {
	pin, err := t.AttestationKey()
	if err != nil {
		return err
	}
	_, err = VerifyTPM(ev, stmt, TPMRoots{AttestationKeys: []string{pin}})
	return err
}

// A SealedKey is a secret sealed to the identity PCR: the TPM's private
// and public blobs of the sealed object, usable only on this TPM and only
// while the identity PCR holds the value it held when sealing.
type SealedKey struct {
	Private []byte
	Public  []byte
}

// Seal seals secret (at most 128 bytes) to the identity PCR's current
// value.
func (t *TPM) Seal(secret []byte) (SealedKey, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now, err := t.readPCRs()
	if err != nil {
		return SealedKey{}, err
	}
	sel := t.identitySelection()
	pcrDigest := sha256.Sum256(now[0][:])
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return SealedKey{}, err
	}
	if err := (tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: pcrDigest[:]}, Pcrs: sel}).Update(calc); err != nil {
		return SealedKey{}, fmt.Errorf("tpm: seal policy: %w", err)
	}
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: t.srk, Name: t.srkN, Auth: tpm2.PasswordAuth(nil)},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgKeyedHash,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: true},
			AuthPolicy:       tpm2.TPM2BDigest{Buffer: calc.Hash().Digest},
		}),
	}.Execute(t.tpm)
	if err != nil {
		return SealedKey{}, fmt.Errorf("tpm: seal: %w", err)
	}
	return SealedKey{Private: rsp.OutPrivate.Buffer, Public: rsp.OutPublic.Bytes()}, nil
}

func (t *TPM) identitySelection() tpm2.TPMLPCRSelection {
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(t.pcrs[0]),
	}}}
}

// ErrUnseal is returned by Unseal when the TPM refuses: the identity PCR no
// longer holds the value the secret was sealed to, or the blob is not this
// TPM's.
var ErrUnseal = errors.New("tpm: the sealed key does not unseal")

// Unseal returns the secret of k when the identity PCR holds the value it
// was sealed to.
func (t *TPM) Unseal(k SealedKey) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ld, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: t.srk, Name: t.srkN, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    tpm2.TPM2BPrivate{Buffer: k.Private},
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](k.Public),
	}.Execute(t.tpm)
	if err != nil {
		return nil, fmt.Errorf("%w: load: %v", ErrUnseal, err)
	}
	defer tpm2.FlushContext{FlushHandle: ld.ObjectHandle}.Execute(t.tpm)
	sess, closeSess, err := tpm2.PolicySession(t.tpm, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return nil, fmt.Errorf("tpm: policy session: %w", err)
	}
	defer closeSess()
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: t.identitySelection()}).Execute(t.tpm); err != nil {
		return nil, fmt.Errorf("tpm: policy PCR: %w", err)
	}
	rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: ld.ObjectHandle, Name: ld.Name, Auth: sess}}.Execute(t.tpm)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnseal, err)
	}
	return rsp.OutData.Buffer, nil
}

func hexDigest(d [sha256.Size]byte) string { return hex.EncodeToString(d[:]) }
