package notify

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rulelock/rulelock/policy"
)

// jsonMessage is the FormatJSON body.
type jsonMessage struct {
	Event    string        `json:"event"`
	Group    string        `json:"group"`
	Requests []jsonRequest `json:"requests"`
	Unlisted int           `json:"unlisted"` // parked requests dropped from this group's full queue
}

type jsonRequest struct {
	ID           string               `json:"id"`
	Agent        string               `json:"agent"`
	ActionType   string               `json:"action_type"`
	Requirements []policy.Requirement `json:"requirements"`
	Expires      time.Time            `json:"expires"`
	URL          string               `json:"url"`
}

// body encodes the message of batch for g.
func (n *Notifier) body(g *group, batch []Request, unlisted int) ([]byte, error) {
	if g.target.Format == FormatSlack {
		return json.Marshal(struct {
			Text string `json:"text"`
		}{n.slackText(g.name, batch, unlisted)})
	}
	m := jsonMessage{Event: "approval_requested", Group: g.name, Requests: []jsonRequest{}, Unlisted: unlisted}
	for _, r := range batch {
		m.Requests = append(m.Requests, jsonRequest{ID: r.ID, Agent: r.Agent, ActionType: r.ActionType,
			Requirements: r.Requirements, Expires: r.Expires.UTC(), URL: n.URL(r.ID)})
	}
	return json.Marshal(m)
}

// slackText is the Slack message: one line per request, every string
// from the request escaped by slackCode.
func (n *Notifier) slackText(group string, batch []Request, unlisted int) string {
	var b strings.Builder
	total := len(batch) + unlisted
	fmt.Fprintf(&b, "%d request(s) wait for approval by %s", total, slackCode(group))
	for _, r := range batch {
		fmt.Fprintf(&b, "\n• <%s|%s> %s by agent %s, expires %s", slackURL(n.URL(r.ID)), slackEscape(r.ID),
			slackCode(r.ActionType), slackCode(r.Agent), r.Expires.UTC().Format(time.RFC3339))
		for _, q := range r.Requirements {
			fmt.Fprintf(&b, "\n    %d approver(s)", q.Approvers)
			if len(q.Groups) > 0 {
				b.WriteString(" from")
				for _, gr := range q.Groups {
					b.WriteString(" " + slackCode(gr))
				}
			}
			fmt.Fprintf(&b, ", rule %s", slackCode(q.Rule))
			if q.Message != "" {
				b.WriteString(": " + slackCode(q.Message))
			}
		}
	}
	if unlisted > 0 {
		fmt.Fprintf(&b, "\n%d more parked request(s) are not listed (the notification queue was full): see <%s|the pending queue>",
			unlisted, slackURL(n.opts.ConsoleURL+"/console/requests"))
	}
	return b.String()
}

// maxField is the longest string a notification shows whole.
const maxField = 200

// slackCode shows s as Slack inline code: visible escapes for what Slack
// or a reader could misread (slackEscape), no backtick that could end the
// code span, cut at maxField bytes with a visible marker.
func slackCode(s string) string {
	return "`" + slackEscape(s) + "`"
}

// slackEscape escapes s for Slack's mrkdwn: &, < and > as Slack's
// entities, the backtick (which would end the code span) as \u{60}, and
// what a reader could not see, in the vocabulary of the console and the
// CLI: \\ for a backslash; \n, \t, \r; \xNN for other C0 controls,
// DEL and bytes that are not UTF-8; \u{XXXX} for every other character that
// is not plainly visible (hidden). Past maxField bytes of s the rest is
// replaced by "…(N more bytes)".
func slackEscape(s string) string {
	var b strings.Builder
	rest := ""
	if len(s) > maxField {
		cut := maxField
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s, rest = s[:cut], s[cut:]
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '&':
			b.WriteString("&amp;")
		case r == '<':
			b.WriteString("&lt;")
		case r == '>':
			b.WriteString("&gt;")
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r == '`' || hidden(r):
			fmt.Fprintf(&b, `\u{%X}`, r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	if rest != "" {
		fmt.Fprintf(&b, "…(%d more bytes)", len(rest))
	}
	return b.String()
}

// hidden reports whether r (not ASCII) is not plainly visible as itself:
// controls, format (bidi, zero-width, Tag), private use, spaces other than
// U+0020, separators, variation selectors, default-ignorable, noncharacter
// and unassigned code points.
func hidden(r rune) bool {
	if r < 0x7f {
		return false
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs, unicode.Zs, unicode.Zl, unicode.Zp,
		unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point, unicode.Noncharacter_Code_Point,
		unicode.Bidi_Control, unicode.Join_Control) ||
		!unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs)
}

// slackURL escapes a link target for <url|text>: the URL is ours (the
// console's base and a path-escaped id), and &, <, > and | must not end
// it early.
func slackURL(u string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "|", "%7C")
	return r.Replace(u)
}
