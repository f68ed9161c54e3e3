package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/review"
)

func approvalCommands() []command {
	return []command{
		{"pending", "list the requests waiting for approval at a running gateway", runPending},
		{"approve", "sign and submit an approval of a parked request", runVote(approval.Approve)},
		{"reject", "sign and submit a rejection of a parked request", runVote(approval.Reject)},
	}
}

// approverClient talks to a running gateway as an approver.
type approverClient struct {
	url, token string
	client     *http.Client
}

func approverFlags(e *env, name, usage string) (*flagSetWithClient, error) {
	fs := newFlags(e, name, usage)
	f := &flagSetWithClient{FlagSet: fs}
	def := e.getenv("RULELOCK_GATEWAY")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	fs.StringVar(&f.url, "gateway", def, "the gateway's URL ($RULELOCK_GATEWAY when set)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the approver's API token (default: $RULELOCK_TOKEN)")
	fs.StringVar(&f.caFile, "tls-ca", "", "PEM file of the CA(s) that issued the gateway's TLS certificate (instead of the system's)")
	fs.StringVar(&f.certFile, "tls-cert", "", "PEM client certificate, for a gateway that requires one (tls.client_ca_file)")
	fs.StringVar(&f.keyFile, "tls-key", "", "PEM private key of --tls-cert")
	return f, nil
}

type flagSetWithClient struct {
	*flag.FlagSet
	url, tokenFile            string
	caFile, certFile, keyFile string
}

func (f *flagSetWithClient) client(e *env) (*approverClient, error) {
	tok := e.getenv("RULELOCK_TOKEN")
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, err
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		return nil, usageError("no token: give --token-file or set RULELOCK_TOKEN")
	}
	if err := checkGatewayURL(f.url); err != nil {
		return nil, err
	}
	tc, err := clientTLS(f.caFile, f.certFile, f.keyFile)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if tc != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tc
		hc.Transport = tr
	}
	return &approverClient{url: strings.TrimSuffix(f.url, "/"), token: tok, client: hc}, nil
}

func (c *approverClient) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
			return fmt.Errorf("%s: %s (%s)", review.Escape(resp.Status), review.Escape(e.Error.Message), review.Escape(e.Error.Code))
		}
		return fmt.Errorf("%s", review.Escape(resp.Status))
	}
	return json.Unmarshal(b, out)
}

func (c *approverClient) pending(ctx context.Context) ([]gateway.PendingRequest, error) {
	var out struct {
		Pending []gateway.PendingRequest `json:"pending"`
	}
	err := c.do(ctx, "GET", "/v1/approvals", nil, &out)
	return out.Pending, err
}

func runPending(ctx context.Context, e *env, args []string) error {
	f, _ := approverFlags(e, "pending", "[--gateway URL] [--token-file FILE] [--tls-ca FILE] [--tls-cert FILE --tls-key FILE]")
	if err := parseFlags(f.FlagSet, args); err != nil {
		return err
	}
	c, err := f.client(e)
	if err != nil {
		return err
	}
	list, err := c.pending(ctx)
	if err != nil {
		return err
	}
	if len(list) == 0 {
		fmt.Fprintln(e.stdout, "no requests are waiting for approval")
		return nil
	}
	for _, p := range list {
		if _, err := printPending(e, p); err != nil {
			return err
		}
	}
	return nil
}

// printPending shows a parked request as internal/review renders it: every
// string escaped, the action whole, the agent's words marked as its claims.
// It returns the review, so that approve can refuse to sign an action that
// could not be shown.
func printPending(e *env, p gateway.PendingRequest) (*review.Review, error) {
	v := review.New(review.Request{
		Parked: p.Request, Action: p.Action, Instruction: p.Instruction, Reasoning: p.Reasoning, Rules: p.Rules,
		StillNeeded: p.StillNeeded,
	}, time.Now())
	return v, v.Write(e.stdout)
}

// runVote signs the statement for a parked request with the approver's key
// and submits it. The statement is built here from the request and checked
// against the canonical action the gateway shows: the approver signs the
// hash of exactly what they saw.
func runVote(v approval.Verdict) func(context.Context, *env, []string) error {
	name := "approve"
	if v == approval.Reject {
		name = "reject"
	}
	return func(ctx context.Context, e *env, args []string) error {
		f, _ := approverFlags(e, name, "ID --key FILE [--reason TEXT] [--gateway URL] [--token-file FILE] [--tls-ca FILE] [--tls-cert FILE --tls-key FILE]")
		keyFile := f.String("key", "", "the approver's signing key file (rulelock keygen)")
		reason := f.String("reason", "", "why (required to reject)")
		pos, err := parseInterspersed(f.FlagSet, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 || *keyFile == "" || (v == approval.Reject && *reason == "") {
			f.Usage()
			return &exitError{code: 2}
		}
		id := pos[0]
		if !approval.ValidID(id) {
			return usageError("%s is not a request id (rulelock pending lists them)", review.Quote(id))
		}
		signer, err := audit.LoadKeyFile(*keyFile)
		if err != nil {
			return err
		}
		c, err := f.client(e)
		if err != nil {
			return err
		}
		list, err := c.pending(ctx)
		if err != nil {
			return err
		}
		var p *gateway.PendingRequest
		for i := range list {
			if list[i].Request.ID == id {
				p = &list[i]
			}
		}
		if p == nil {
			return fmt.Errorf("request %s is not waiting for approval", id)
		}
		if sha256.Sum256(p.Action) != p.Request.Action {
			return fmt.Errorf("request %s: the action shown does not hash to the action in the request: refusing to sign", id)
		}
		st := p.Request.Statement(v, approval.SanitizeReason(*reason))
		if v == approval.Approve && string(st.Marshal()) != p.Approve {
			return fmt.Errorf("request %s: the gateway's statement differs from the one built here: refusing to sign", id)
		}
		shown, err := printPending(e, *p)
		if err != nil {
			return err
		}
		if shown.ActionError != "" {
			return fmt.Errorf("request %s: the action cannot be shown: refusing to sign", review.Escape(id))
		}
		signed, err := approval.Sign(st, signer)
		if err != nil {
			return err
		}
		path := "/v1/requests/" + id + "/approvals"
		if v == approval.Reject {
			path = "/v1/requests/" + id + "/rejections"
		}
		var res gateway.ApprovalResult
		if err := c.do(ctx, "POST", path, map[string]string{"note": string(signed)}, &res); err != nil {
			return err
		}
		switch {
		case res.Result != nil && res.Result.Outcome != nil:
			fmt.Fprintf(e.stdout, "%s: quorum reached; %s; executed: %s\n", review.Escape(id), review.Escape(string(res.Result.Decision.Decision)), review.Escape(string(res.Result.Outcome.Status)))
		case res.Result != nil:
			fmt.Fprintf(e.stdout, "%s: quorum reached; %s\n", review.Escape(id), review.Escape(string(res.Result.Decision.Decision)))
		default:
			fmt.Fprintf(e.stdout, "%s: %s recorded; state %s, %d approvals\n", review.Escape(id), v, review.Escape(string(res.Request.State)), len(res.Request.Approvals))
		}
		return nil
	}
}
