package approval

import (
	"errors"
	"fmt"
)

// An Error is one class of refusal. Each has a stable code, which the HTTP
// API returns as its JSON error code; callers branch on the sentinels below
// with errors.Is.
type Error struct {
	code string
	text string
}

func (e *Error) Error() string { return e.text }

// Code returns the stable code, such as "self_approval".
func (e *Error) Code() string { return e.code }

// The refusals. Every error the Manager returns for a refused request,
// approval or rejection wraps exactly one of these.
var (
	ErrNotFound        = &Error{"not_found", "no such request"}
	ErrClosed          = &Error{"closed", "request is no longer pending"}
	ErrExpired         = &Error{"expired", "request has expired"}
	ErrQueueFull       = &Error{"queue_full", "too many pending requests"}
	ErrInvalidRequest  = &Error{"invalid_request", "invalid request"}
	ErrDuplicateID     = &Error{"duplicate_request", "request id already in use"}
	ErrBadStatement    = &Error{"bad_statement", "malformed approval statement"}
	ErrUnknownApprover = &Error{"unknown_approver", "signed by no configured approver"}
	ErrBadSignature    = &Error{"bad_signature", "signature does not verify"}
	ErrRequestMismatch = &Error{"request_mismatch", "statement names another request"}
	ErrActionMismatch  = &Error{"action_mismatch", "statement names another action"}
	ErrPolicyMismatch  = &Error{"policy_mismatch", "statement names another policy"}
	ErrExpiryMismatch  = &Error{"expiry_mismatch", "statement names another expiry"}
	ErrVerdictMismatch = &Error{"verdict_mismatch", "statement has the other verdict"}
	ErrSelfApproval    = &Error{"self_approval", "approver is the requesting agent"}
	ErrNotInGroup      = &Error{"not_in_group", "approver is in none of the required groups"}
	ErrDuplicate       = &Error{"duplicate_approver", "approver has already approved"}
)

// Code returns the stable code of the refusal err wraps, or "" when err is
// not a refusal (for example a Recorder failure, which is the caller's own).
func Code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.code
	}
	return ""
}

// A RefusalError says which submission was refused and why. Err is one of
// the sentinels; Detail, when set, names the offending values.
type RefusalError struct {
	Op       string // park, approve, reject, mark executed, restore
	Request  string // request id
	Approver string // approver id, when known
	Err      *Error
	Detail   string
}

func (e *RefusalError) Error() string {
	// The id comes from the caller, the approver from a verified note:
	// quote an id that is not a valid one rather than echo it.
	id := e.Request
	if !validID(id) {
		id = fmt.Sprintf("%.80q", id)
	}
	s := e.Op + " " + id
	if e.Approver != "" {
		s += " by " + e.Approver
	}
	s += ": " + e.Err.text
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *RefusalError) Unwrap() error { return e.Err }

func refuse(op, id, approver string, err *Error, format string, args ...any) *RefusalError {
	e := &RefusalError{Op: op, Request: id, Approver: approver, Err: err}
	if format != "" {
		e.Detail = fmt.Sprintf(format, args...)
	}
	return e
}
