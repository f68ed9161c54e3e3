package ledger

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rulelock/rulelock/audit"
)

// The emergency stop is three kinds of note entries (audit.KindNote), so
// that a verifier that knows only the existing kinds still reads the log.
// Their Message opens with one of these words and the freeze's id; the
// entry's Approver is who signed the statement (internal/freeze), its Raw
// the signed statement itself.
//
//	freeze <id>: <reason>       an approver froze the gateway
//	unfreeze_vote <id>          an approver signed for lifting freeze <id>
//	unfreeze <id>               the freeze is lifted; Signers lists the approvers whose votes lifted it
const (
	NoteFreeze       = "freeze"
	NoteUnfreezeVote = "unfreeze_vote"
	NoteUnfreeze     = "unfreeze"
)

// Frozen is the deny reason of every action decided while the gateway is
// frozen, and the code of the refusals then.
const Frozen Reason = "frozen"

// Freeze is a freeze in force, as the log's notes fold into it.
type Freeze struct {
	ID     string    `json:"id"`
	Reason string    `json:"reason"`
	By     string    `json:"by"`    // the approver who signed it
	Since  time.Time `json:"since"` // the freeze entry's time
	Votes  []string  `json:"unfreeze_votes"`
}

// FreezeNote is the note of a freeze (NoteFreeze), of an unfreeze vote or of
// the unfreeze, as ParseFreezeNote reads it.
type FreezeNote struct {
	Word   string // NoteFreeze, NoteUnfreezeVote or NoteUnfreeze
	ID     string
	Reason string // NoteFreeze only
}

// ParseFreezeNote reads a note entry's message; ok is false when it is not
// one of the emergency stop's.
func ParseFreezeNote(e *audit.Entry) (n FreezeNote, ok bool) {
	if e.Kind != audit.KindNote {
		return n, false
	}
	word, rest, _ := strings.Cut(e.Message, " ")
	switch word {
	case NoteFreeze:
		id, reason, ok := strings.Cut(rest, ": ")
		return FreezeNote{Word: word, ID: id, Reason: reason}, ok && id != ""
	case NoteUnfreezeVote, NoteUnfreeze:
		return FreezeNote{Word: word, ID: rest}, rest != "" && !strings.Contains(rest, " ")
	}
	return n, false
}

// freezeFold is the freeze state of the ledger.
type freezeFold struct {
	mu   sync.Mutex
	cur  *Freeze
	used map[string]bool // every freeze id the log has seen
}

func (f *freezeFold) apply(e *audit.Entry) {
	n, ok := ParseFreezeNote(e)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch n.Word {
	case NoteFreeze:
		if f.used == nil {
			f.used = map[string]bool{}
		}
		f.used[n.ID] = true
		if f.cur == nil { // a second freeze while frozen changes nothing
			f.cur = &Freeze{ID: n.ID, Reason: n.Reason, By: e.Approver, Since: e.Time}
		}
	case NoteUnfreezeVote:
		if f.cur != nil && f.cur.ID == n.ID && !slices.Contains(f.cur.Votes, e.Approver) {
			f.cur.Votes = append(f.cur.Votes, e.Approver)
		}
	case NoteUnfreeze:
		if f.cur != nil && f.cur.ID == n.ID {
			f.cur = nil
		}
	}
}

// Freeze returns the freeze in force, nil when there is none.
func (l *Ledger) Freeze() *Freeze {
	l.freeze.mu.Lock()
	defer l.freeze.mu.Unlock()
	if l.freeze.cur == nil {
		return nil
	}
	c := *l.freeze.cur
	c.Votes = append([]string{}, c.Votes...) // [] in JSON, never null
	return &c
}

// FreezeUsed reports whether a freeze with this id is in the log.
func (l *Ledger) FreezeUsed(id string) bool {
	l.freeze.mu.Lock()
	defer l.freeze.mu.Unlock()
	return l.freeze.used[id]
}
