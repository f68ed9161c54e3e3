package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/rulelock/rulelock/internal/attest"
	"github.com/rulelock/rulelock/internal/fsx"
)

const tpmUsage = `usage: rulelock tpm <command> [arguments]

Enrols a TPM's attestation key (the policy's tpm-ak) against the TPM's
endorsement key certificate, which its manufacturer signed
(docs/attestation.md#enrolling-a-tpm):

  on the gateway's host:  rulelock tpm request --device DEV > request
  on the verifier's side: rulelock tpm challenge --ek-roots ROOTS.pem [--ek-intermediates CAS.pem] --secret FILE request > challenge
  on the gateway's host:  rulelock tpm answer --device DEV challenge > answer
  on the verifier's side: rulelock tpm enrol --secret FILE answer

enrol prints the policy line "tpm-ak <pin>" once the TPM holding the
certified EK has proved it holds the attestation key too.
`

func tpmCommands() []command {
	return []command{{"tpm", "enrol a TPM's attestation key against its manufacturer-certified endorsement key", runTPM}}
}

func runTPM(ctx context.Context, e *env, args []string) error {
	sub := map[string]func(context.Context, *env, []string) error{
		"request": runTPMRequest, "challenge": runTPMChallenge, "answer": runTPMAnswer, "enrol": runTPMEnrol,
	}
	if len(args) == 0 || sub[args[0]] == nil {
		fmt.Fprint(e.stderr, tpmUsage)
		if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return &exitError{code: 2}
	}
	return sub[args[0]](ctx, e, args[1:])
}

// openTPMFlag opens the TPM a --device flag names.
func openTPMFlag(device string) (*attest.TPM, error) {
	if device == "" {
		return nil, usageError("--device is required (/dev/tpmrm0 or a swtpm socket)")
	}
	return attest.OpenTPM(attest.TPMOptions{Device: device})
}

func runTPMRequest(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "tpm request", "--device DEV")
	device := fs.String("device", "", "the TPM (`/dev/tpmrm0` or a swtpm socket)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("unexpected argument %q", fs.Arg(0))
	}
	tp, err := openTPMFlag(*device)
	if err != nil {
		return err
	}
	defer tp.Close()
	req, err := tp.EnrolmentRequest()
	if err != nil {
		return err
	}
	_, err = e.stdout.Write(req.Marshal())
	return err
}

func runTPMChallenge(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "tpm challenge", "--ek-roots FILE [--ek-intermediates FILE] --secret FILE REQUEST")
	roots := fs.String("ek-roots", "", "PEM `file` of the TPM manufacturers' root certificates to trust (required)")
	inter := fs.String("ek-intermediates", "", "PEM `file` of their intermediate certificates, to build the chain")
	secret := fs.String("secret", "", "`file` to create (mode 0600) with what enrol needs; keep it private (required)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 1:
		return usageError("want one enrolment request file")
	case *roots == "" || *secret == "":
		return usageError("--ek-roots and --secret are required")
	}
	var r attest.EKRoots
	if r.Roots, err = pemPool(*roots); err != nil {
		return err
	}
	if *inter != "" {
		if r.Intermediates, err = pemPool(*inter); err != nil {
			return err
		}
	}
	b, err := readFileMax(pos[0], 64<<10)
	if err != nil {
		return err
	}
	req, err := attest.ParseEnrolmentRequest(b)
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	ch, err := attest.NewChallenge(req, r, time.Now())
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("FAIL: %w", err)}
	}
	if err := fsx.WriteNewFile(*secret, ch.MarshalSecret(), 0o600); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists; refusing to overwrite it", *secret)
		}
		return err
	}
	_, err = e.stdout.Write(ch.Marshal())
	return err
}

// pemPool reads a PEM file of certificates.
func pemPool(path string) (*x509.CertPool, error) {
	b, err := readFileMax(path, 1<<20)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return p, nil
}

func runTPMAnswer(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "tpm answer", "--device DEV CHALLENGE")
	device := fs.String("device", "", "the TPM (`/dev/tpmrm0` or a swtpm socket)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("want one challenge file")
	}
	b, err := readFileMax(pos[0], 64<<10)
	if err != nil {
		return err
	}
	ch, err := attest.ParseChallenge(b)
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	tp, err := openTPMFlag(*device)
	if err != nil {
		return err
	}
	defer tp.Close()
	ans, err := tp.Answer(ch)
	if err != nil {
		return err
	}
	_, err = e.stdout.Write(attest.MarshalAnswer(ans))
	return err
}

func runTPMEnrol(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "tpm enrol", "--secret FILE ANSWER")
	secret := fs.String("secret", "", "the `file` tpm challenge wrote (required)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 1:
		return usageError("want one answer file")
	case *secret == "":
		return usageError("--secret is required")
	}
	sb, err := readFileMax(*secret, 64<<10)
	if err != nil {
		return err
	}
	ch, err := attest.ParseSecret(sb)
	if err != nil {
		return fmt.Errorf("%s: %w", *secret, err)
	}
	ab, err := readFileMax(pos[0], 64<<10)
	if err != nil {
		return err
	}
	ans, err := attest.ParseAnswer(ab)
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	pin, err := ch.Check(ans)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("FAIL: %w", err)}
	}
	fmt.Fprintf(e.stdout, "tpm-ak %s\n", pin)
	return nil
}
