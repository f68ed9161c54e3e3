package notify

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rulelock/rulelock/internal/review"
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

// slackEscape escapes s for Slack's mrkdwn: what a reader could not see
// as the console and the CLI show it (review.Escape: \\, \n, \t, \r,
// \xNN, \u{XXXX}), then &, < and > as Slack's entities and the backtick
// (which would end the code span) as \u{60}. Past maxField bytes of s the
// rest is replaced by "…(N more bytes)".
func slackEscape(s string) string {
	rest := ""
	if len(s) > maxField {
		cut := maxField
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s, rest = s[:cut], s[cut:]
	}
	e := slackEntities.Replace(review.Escape(s))
	if rest != "" {
		e += fmt.Sprintf("…(%d more bytes)", len(rest))
	}
	return e
}

// slackEntities: review.Escape's escapes hold none of these characters, so
// replacing them afterwards cannot change an escape.
var slackEntities = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "`", `\u{60}`)

// slackURL escapes a link target for <url|text>: the URL is ours (the
// console's base and a path-escaped id), and &, <, > and | must not end
// it early.
func slackURL(u string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "|", "%7C")
	return r.Replace(u)
}
