package httpapi

import (
	"errors"
	"net/http"

	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// freezeState answers GET /v1/freeze: the freeze in force (null when none)
// and how many approvers lifting it takes.
func (s *Server) freezeState(w http.ResponseWriter, r *http.Request, _ policy.Agent) {
	writeJSON(w, http.StatusOK, s.cfg.Gateway.Frozen())
}

// freeze answers POST /v1/freeze and POST /v1/unfreeze: the body is
// {"note": "<signed freeze or unfreeze statement>"} (internal/freeze).
func (s *Server) freeze(lift bool) func(http.ResponseWriter, *http.Request, policy.Agent) {
	return func(w http.ResponseWriter, r *http.Request, caller policy.Agent) {
		note, ok := s.readNote(w, r)
		if !ok {
			return
		}
		var st gateway.FreezeState
		var err error
		if lift {
			st, err = s.cfg.Gateway.Unfreeze(r.Context(), caller.ID, []byte(note))
		} else {
			st, err = s.cfg.Gateway.Freeze(r.Context(), caller.ID, []byte(note))
		}
		var fe *gateway.FreezeError
		switch {
		case errors.As(err, &fe) && fe.Code == "bad_statement":
			writeError(w, http.StatusBadRequest, fe.Code, fe.Error())
		case errors.As(err, &fe):
			writeError(w, http.StatusConflict, fe.Code, fe.Error())
		case err != nil:
			writeGatewayError(w, err)
		default:
			writeJSON(w, http.StatusOK, st)
		}
	}
}

// addFrozen adds the freeze in force to a /readyz body.
func (s *Server) addFrozen(body map[string]any) {
	if s.cfg.Gateway == nil {
		return
	}
	if f := s.cfg.Gateway.Frozen(); f.Freeze != nil {
		body["frozen"] = f
	}
}
