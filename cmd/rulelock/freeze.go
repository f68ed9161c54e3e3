package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/freeze"
	"github.com/rulelock/rulelock/internal/gateway"
)

func freezeCommands() []command {
	return []command{
		{"freeze", "emergency stop: sign and submit a freeze; every new action is refused until approvers unfreeze", runFreeze(false)},
		{"unfreeze", "sign and submit a vote to lift the freeze (freeze.unfreeze_approvers distinct approvers lift it)", runFreeze(true)},
	}
}

// runFreeze implements rulelock freeze (lift false) and rulelock unfreeze.
func runFreeze(lift bool) func(context.Context, *env, []string) error {
	name, usage := "freeze", "--reason TEXT --key FILE [--gateway URL] [--token-file FILE] [--tls-ca FILE] [--tls-cert FILE --tls-key FILE]"
	if lift {
		name, usage = "unfreeze", "--key FILE [--gateway URL] [--token-file FILE] [--tls-ca FILE] [--tls-cert FILE --tls-key FILE]"
	}
	return func(ctx context.Context, e *env, args []string) error {
		f, _ := approverFlags(e, name, usage)
		keyFile := f.String("key", "", "the approver's signing key file (rulelock keygen)")
		var reason *string
		if !lift {
			reason = f.String("reason", "", "why the gateway is frozen (one line, logged)")
		}
		if err := parseFlags(f.FlagSet, args); err != nil {
			return err
		}
		if *keyFile == "" || (!lift && freeze.CleanReason(*reason) == "") {
			f.Usage()
			return &exitError{code: 2}
		}
		signer, err := audit.LoadKeyFile(*keyFile)
		if err != nil {
			return err
		}
		c, err := f.client(e)
		if err != nil {
			return err
		}
		st := freeze.Statement{ID: freeze.NewID(), Time: time.Now().UTC().Truncate(time.Second)}
		if lift {
			var now gateway.FreezeState
			if err := c.do(ctx, "GET", "/v1/freeze", nil, &now); err != nil {
				return err
			}
			if now.Freeze == nil {
				return fmt.Errorf("the gateway is not frozen")
			}
			fmt.Fprintf(e.stdout, "freeze %s by %s since %s: %s\n", now.Freeze.ID, now.Freeze.By, now.Freeze.Since.Format(time.RFC3339), now.Freeze.Reason)
			st = freeze.Statement{Lift: true, ID: now.Freeze.ID}
		} else {
			st.Reason = freeze.CleanReason(*reason)
		}
		signed, err := freeze.Sign(st, signer)
		if err != nil {
			return err
		}
		var res gateway.FreezeState
		if err := c.do(ctx, "POST", "/v1/"+name, map[string]string{"note": string(signed)}, &res); err != nil {
			return err
		}
		switch {
		case res.Freeze == nil:
			fmt.Fprintln(e.stdout, "unfrozen: actions are accepted again")
		case lift:
			fmt.Fprintf(e.stdout, "vote recorded: %d of %d approvers (%s) have signed for lifting freeze %s\n",
				len(res.Freeze.Votes), res.UnfreezeQuorum, strings.Join(res.Freeze.Votes, ", "), res.Freeze.ID)
		default:
			fmt.Fprintf(e.stdout, "frozen: freeze %s; every new action is refused until %d approvers sign rulelock unfreeze\n", res.Freeze.ID, res.UnfreezeQuorum)
		}
		return nil
	}
}
