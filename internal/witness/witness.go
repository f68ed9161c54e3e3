// Package witness speaks C2SP tlog-witness: the protocol by which a log
// gets its checkpoints cosigned by independent witnesses, so that a log
// showing two parties two different histories is caught.
//
// A log sends each new checkpoint, with a consistency proof from the size
// the witness cosigned last, to the witness's submission prefix:
//
//	POST <prefix>/add-checkpoint
//
//	old 5
//	<base64 proof hash>
//	...
//	<empty line>
//	<signed checkpoint note>
//
// and gets back the witness's cosignature lines (C2SP tlog-cosignature,
// Ed25519 cosignature/v1, which commits to a timestamp):
//
//	— witness.example/w1 <base64 key hash || timestamp || signature>
//
// A 409 Conflict says the witness cosigned another size last (its body is
// that size): a larger one means the log was rolled back. A 422 says the
// proof does not verify: the log forked. 403 means the witness does not
// trust the log's key, 404 that it does not know the log.
//
// Client is the log's side (an audit.Witness); Server is a witness, which
// rulelock's tests run as the real thing; Cosigner signs cosignatures.
package witness

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
)

// Client submits checkpoints to one witness. The zero HTTP client is
// http.DefaultClient.
type Client struct {
	URL  string // the witness's submission prefix
	HTTP *http.Client
}

// maxReply bounds a witness's reply.
const maxReply = 64 << 10

// AddCheckpoint implements audit.Witness.
func (c *Client) AddCheckpoint(ctx context.Context, oldSize int64, proof tlog.TreeProof, checkpoint []byte) ([]byte, error) {
	var body bytes.Buffer
	fmt.Fprintf(&body, "old %s\n", formatSize(oldSize))
	for _, h := range proof {
		fmt.Fprintf(&body, "%s\n", base64.StdEncoding.EncodeToString(h[:]))
	}
	body.WriteString("\n")
	body.Write(checkpoint)
	url := strings.TrimSuffix(c.URL, "/") + "/add-checkpoint"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, &body)
	if err != nil {
		return nil, fmt.Errorf("add-checkpoint: %w", err)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("add-checkpoint: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
	if err != nil {
		return nil, fmt.Errorf("add-checkpoint: read reply: %w", err)
	}
	if len(b) > maxReply {
		return nil, errors.New("add-checkpoint: reply too large")
	}
	return reply(resp.StatusCode, b)
}

// reply interprets an add-checkpoint answer.
func reply(status int, b []byte) ([]byte, error) {
	switch status {
	case http.StatusOK:
		return b, nil
	case http.StatusConflict:
		s, ok := strings.CutSuffix(string(b), "\n")
		n, valid := parseSize(s)
		if !ok || !valid {
			return nil, fmt.Errorf("add-checkpoint: 409 with a malformed size %q", b)
		}
		return nil, &audit.WitnessConflictError{Size: n}
	case http.StatusUnprocessableEntity:
		return nil, fmt.Errorf("add-checkpoint: 422 %s: %w", snippet(b), audit.ErrWitnessInconsistent)
	case http.StatusForbidden:
		return nil, fmt.Errorf("add-checkpoint: 403: the witness does not trust the log's key: %s", snippet(b))
	case http.StatusNotFound:
		return nil, fmt.Errorf("add-checkpoint: 404: the witness does not know the log's origin: %s", snippet(b))
	}
	return nil, fmt.Errorf("add-checkpoint: status %d: %s", status, snippet(b))
}

// snippet is the start of a reply body, for errors.
func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return fmt.Sprintf("%q", s)
}
