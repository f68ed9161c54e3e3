package console

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/passkey"
)

// The approval ceremony: see auth.go's doc comment ("Voting").

// pending returns the pending request with id id.
func (s *Server) pending(id string) (gateway.PendingRequest, bool) {
	for _, p := range s.cfg.Gateway.Pending() {
		if p.Request.ID == id {
			return p, true
		}
	}
	return gateway.PendingRequest{}, false
}

func (s *Server) voteBegin(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.signedIn(w, r)
	if !ok {
		return
	}
	who := sess.Person.ID
	var req struct {
		Request string `json:"request"`
		Verdict string `json:"verdict"`
		Reason  string `json:"reason"`
	}
	if err := decode(r, w, &req); err != nil {
		s.refuse(w, r, who, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	v := approval.Verdict(req.Verdict)
	reason := approval.SanitizeReason(req.Reason)
	switch {
	case !sess.Person.Approver:
		s.refuse(w, r, who, http.StatusForbidden, "not_an_approver", "only approvers vote")
		return
	case v != approval.Approve && v != approval.Reject:
		s.refuse(w, r, who, http.StatusBadRequest, "bad_request", fmt.Sprintf("verdict %.20q: want approve or reject", req.Verdict))
		return
	case v == approval.Reject && reason == "":
		s.refuse(w, r, who, http.StatusBadRequest, "bad_request", "a rejection needs a reason")
		return
	case v == approval.Approve:
		reason = ""
	}
	creds := s.registry().Passkeys(who)
	if len(creds) == 0 {
		s.refuse(w, r, who, http.StatusForbidden, "no_passkey", "no passkey enrolled")
		return
	}
	p, ok := s.pending(req.Request)
	if !ok {
		s.refuse(w, r, who, http.StatusNotFound, "not_found", fmt.Sprintf("no pending request %.140q", req.Request))
		return
	}
	st := p.Request.Statement(v, reason)
	nonce := newNonce()
	key := base64.RawURLEncoding.EncodeToString(nonce)
	if !s.open(w, r, who, "session:"+sess.ID, key, &ceremony{kind: "vote", session: sess.ID, person: who, request: p.Request.ID,
		verdict: v, statement: st}) {
		return
	}
	writeJSON(w, map[string]any{"nonce": key, "statement": string(st.Marshal()),
		"publicKey": s.requestOptions(passkey.Challenge(st.Marshal(), nonce), creds)})
}

func (s *Server) voteFinish(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.signedIn(w, r)
	if !ok {
		return
	}
	who := sess.Person.ID
	var req assertionRequest
	if err := decode(r, w, &req); err != nil {
		s.refuse(w, r, who, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	c, ok := s.ceremonies.take(s.cfg.Now(), req.Nonce, "vote")
	switch {
	case !ok:
		s.refuse(w, r, who, http.StatusForbidden, "bad_nonce", "vote nonce unknown, already used or expired: a replayed assertion?")
		return
	case c.session != sess.ID || c.person != who:
		s.refuse(w, r, who, http.StatusForbidden, "bad_nonce", "the nonce was issued to another session")
		return
	case c.request != req.Request:
		s.refuse(w, r, who, http.StatusForbidden, "cross_request", fmt.Sprintf("the nonce was issued for request %s, not %.140q", c.request, req.Request))
		return
	}
	a, err := req.assertion()
	if err != nil {
		s.refuse(w, r, who, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if !slices.ContainsFunc(s.registry().Passkeys(who), func(p passkey.Credential) bool { return bytes.Equal(p.ID, a.Credential) }) {
		s.refuse(w, r, who, http.StatusForbidden, "not_your_passkey", "the assertion was made with a passkey that is not the signed-in approver's")
		return
	}
	signed := approval.PasskeyApproval{Approver: who, Statement: c.statement, Assertion: a}.Marshal()
	vote := s.cfg.Gateway.Approve
	if c.verdict == approval.Reject {
		vote = s.cfg.Gateway.Reject
	}
	res, err := vote(r.Context(), who, c.request, signed)
	if code := approval.Code(err); code != "" {
		// gateway.RefusedVote logged it, with who as the caller.
		http.Error(w, code+": "+err.Error(), http.StatusConflict)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	out := map[string]any{"request": c.request, "state": res.Request.State}
	if res.Result != nil {
		out["decision"] = res.Result.Decision.Decision
	}
	writeJSON(w, out)
}
