package console

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/internal/review"
)

// A proofCheck is the verdict on one entry's inclusion in the log, checked
// by the console itself with the audit package: the checkpoint's signature
// by the log's key (Config.LogKey), the inclusion proof of the entry's
// leaf hash in the checkpoint's tree, and that the entry the log serves is
// the entry the proof covers.
type proofCheck struct {
	Verdict    string // "verified", "failed" or "not covered yet"
	OK         bool
	Detail     string // why it failed, or what was checked (escaped)
	LeafHash   string // RFC 6962 leaf hash of the entry, base64
	Checkpoint string // the signed checkpoint note, escaped
	Size       int64  // the checkpoint's tree size
	Root       string // the checkpoint's root hash, base64
	Proof      []string
	// Consistency is the verdict on the checkpoint's consistency with the
	// newest checkpoint the console has seen (consistency.go).
	Consistency consistencyCheck
}

// checkInclusion checks entry i, raw as the log serves it, against the
// latest checkpoint.
func (s *Server) checkInclusion(i int64, raw []byte) proofCheck {
	pc := proofCheck{Verdict: "failed", LeafHash: tlog.RecordHash(raw).String(),
		Consistency: consistencyCheck{Verdict: "failed", Failed: true, Detail: "not checked: no checkpoint verified"}}
	if s.cfg.LogKey == nil {
		pc.Detail = "no log key is configured: the checkpoint's signature cannot be checked"
		return pc
	}
	rcpt, err := s.cfg.Log.Receipt(i)
	if errors.Is(err, audit.ErrNotCovered) {
		pc.Verdict, pc.Detail = "not covered yet", "no signed checkpoint covers this entry yet: the next one will"
		pc.Consistency = consistencyCheck{Verdict: "not checked", Detail: "no checkpoint covers this entry yet: the log's status below checks the latest"}
		return pc
	}
	if err != nil {
		pc.Detail = "no receipt: " + review.Escape(err.Error())
		return pc
	}
	if p, err := audit.ParseReceipt(rcpt); err == nil {
		for _, h := range p.Proof {
			pc.Proof = append(pc.Proof, h.String())
		}
		pc.Checkpoint = escapeLines(string(p.Checkpoint))
	}
	_, p, err := audit.VerifyReceipt(rcpt, s.cfg.LogKey)
	if err != nil {
		pc.Detail = review.Escape(err.Error())
		return pc
	}
	if cp, err := checkpointOf(p.Checkpoint, s.cfg.LogKey); err == nil {
		pc.Size, pc.Root = cp.Size, base64.StdEncoding.EncodeToString(cp.Root[:])
		pc.Consistency = s.checkConsistency(cp, p.Checkpoint)
	}
	switch {
	case p.Index != i:
		pc.Detail = fmt.Sprintf("the receipt is for entry %d", p.Index)
	case !bytes.Equal(p.Entry, raw):
		pc.Detail = "the entry the log serves is not the entry the proof covers"
	default:
		pc.Verdict, pc.OK = "verified", true
		pc.Detail = fmt.Sprintf("checkpoint signed by %s; leaf hash included in its tree of %d entries", review.Escape(s.cfg.LogKey.Name()), pc.Size)
	}
	return pc
}

// checkpointOf opens a signed checkpoint note with key.
func checkpointOf(msg []byte, key note.Verifier) (audit.Checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(key))
	if err != nil {
		return audit.Checkpoint{}, err
	}
	cp, err := audit.ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return audit.Checkpoint{}, err
	}
	if cp.Origin != key.Name() {
		return audit.Checkpoint{}, fmt.Errorf("checkpoint origin %q, want %q", cp.Origin, key.Name())
	}
	return cp, nil
}

// escapeLines escapes each line of s (a note: its newlines are its form).
func escapeLines(s string) string {
	ls := strings.Split(s, "\n")
	for i, l := range ls {
		ls[i] = review.Escape(l)
	}
	return strings.Join(ls, "\n")
}

// logStatus is the log's status panel.
type logStatus struct {
	Size       int64
	Checkpoint string // the latest signed checkpoint, escaped; "" for none
	Verified   bool   // its signature checked with Config.LogKey
	Error      string // why it did not verify
	Covered    int64  // its tree size
	Root       string
	Uncovered  int64 // entries no signed checkpoint covers yet
	// From the checkpointer, when the log reports on it.
	Reporter     bool
	Running      bool
	Failed       int64
	LastError    string
	UnsignedWait string // how long the oldest uncovered entry has waited
	// Consistency of the latest checkpoint with the newest seen before.
	Consistency consistencyCheck
}

// logStatus reads the log's size and latest checkpoint and checks the
// checkpoint's signature.
func (s *Server) logStatus() logStatus {
	st := logStatus{Size: s.cfg.Log.Size()}
	msg := s.cfg.Log.Checkpoint()
	switch {
	case msg == nil:
		st.Error = "no checkpoint has been signed yet"
	case s.cfg.LogKey == nil:
		st.Checkpoint, st.Error = escapeLines(string(msg)), "no log key is configured: the signature cannot be checked"
	default:
		st.Checkpoint = escapeLines(string(msg))
		cp, err := checkpointOf(msg, s.cfg.LogKey)
		if err != nil {
			st.Error = review.Escape(err.Error())
			break
		}
		st.Verified, st.Covered, st.Root = true, cp.Size, base64.StdEncoding.EncodeToString(cp.Root[:])
		st.Consistency = s.checkConsistency(cp, msg)
	}
	st.Uncovered = max(0, st.Size-st.Covered)
	if r, ok := s.cfg.Log.(httpapi.CheckpointReporter); ok {
		cs := r.CheckpointStatus()
		st.Reporter, st.Running, st.Failed = true, cs.Running, cs.Failed
		if cs.Err != nil {
			st.LastError = review.Escape(cs.Err.Error())
		}
		if st.Uncovered > 0 {
			st.UnsignedWait = r.Unsigned().Truncate(time.Second).String()
		}
	}
	return st
}

// entryPage is what templates/entry.html shows.
type entryPage struct {
	Index       int64
	Prev, Next  int64 // -1 for none
	Kind, Time  string
	Request     string // escaped
	RequestLink string // the raw request id when it is plain, for the link
	Closes      int64  // an outcome's decision entry, -1 otherwise
	Fields      []entryField
	Action      []review.Field // the action's own fields, when the entry holds it inline
	Held        []heldField    // the fields held by digest or as a commitment, labelled
	DecodeError string
	Instruction review.Claim
	Reasoning   review.Claim
	Proof       proofCheck
	Status      logStatus
}

// An entryField is one leaf of the encoded entry (review.Fields).
type entryField struct {
	review.Field
	Claim bool // the agent's words (instruction, reasoning)
}

// entry serves entry i: its fields, escaped, and its inclusion proof,
// checked.
func (s *Server) entry(w http.ResponseWriter, r *http.Request, sess *Session) {
	str := r.PathValue("i")
	i, err := strconv.ParseInt(str, 10, 64)
	if err != nil || i < 0 || strconv.FormatInt(i, 10) != str {
		s.renderError(w, sess, http.StatusNotFound, "no entry "+review.Quote(str)+": want an index")
		return
	}
	size := s.cfg.Log.Size()
	if i >= size {
		s.renderError(w, sess, http.StatusNotFound, fmt.Sprintf("no entry %d: the log has %d", i, size))
		return
	}
	raw, err := s.cfg.Log.Entry(i)
	if err != nil {
		s.renderError(w, sess, http.StatusInternalServerError, "the log could not be read: "+review.Escape(err.Error()))
		return
	}
	pg := entryPage{Index: i, Prev: i - 1, Next: i + 1, Closes: -1, Proof: s.checkInclusion(i, raw), Status: s.logStatus()}
	if pg.Next >= size {
		pg.Next = -1
	}
	fields, err := review.Fields(raw)
	if err != nil {
		pg.DecodeError = review.Escape(err.Error())
	}
	for _, f := range fields {
		pg.Fields = append(pg.Fields, entryField{Field: f, Claim: f.Path == "instruction" || f.Path == "reasoning"})
	}
	if e, err := audit.DecodeEntry(raw); err != nil {
		pg.DecodeError = review.Escape(err.Error())
	} else {
		pg.Kind, pg.Time, pg.Request = review.Escape(string(e.Kind)), e.Time.UTC().Format(time.RFC3339Nano), review.Escape(e.RequestID)
		if e.RequestID != "" && pg.Request == e.RequestID {
			pg.RequestLink = e.RequestID
		}
		if e.Kind == audit.KindOutcome {
			pg.Closes = e.Closes
		}
		if e.Action.Text != "" {
			pg.Action, _ = review.Fields([]byte(e.Action.Text))
		}
		pg.Instruction, pg.Reasoning = claimOf(e.Instruction.Text), claimOf(e.Reasoning.Text)
		pg.Held = heldFields(e)
	}
	s.render(w, http.StatusOK, "entry", sess, fmt.Sprintf("Entry %d", i), "log", pg)
}

// claimOf is the agent's text s as review shows a claim.
func claimOf(s string) review.Claim {
	if s == "" {
		return review.Claim{}
	}
	var c review.Claim
	for _, l := range strings.Split(s, "\n") {
		c.Lines = append(c.Lines, review.Escape(l))
	}
	return c
}
