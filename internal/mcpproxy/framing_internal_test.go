package mcpproxy

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/policy"
)

// FuzzFrameStdio: whatever bytes an agent writes, every line the SDK is
// given is one message that passes the strict reading, with no "\r" in
// it, ended by "\n"; and every line of input is either given to the SDK or
// answered, never both and never neither.
func FuzzFrameStdio(f *testing.F) {
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"up.echo","arguments":{"text":"A"}}}`
	for _, s := range []string{
		call + "\n",
		`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\r[" + call + "]\n",
		call + call + "\n",
		call + "\r\n" + call,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a","Name":"b"}}` + "\n",
		"\n\n[]\n{}\n",
	} {
		f.Add([]byte(s))
	}
	p := &Proxy{} // no gateway: refusals are answered, not logged
	f.Fuzz(func(t *testing.T, in []byte) {
		var sdk, out bytes.Buffer
		if err := p.frameStdio(context.Background(), policy.Agent{ID: "fuzz"}, bytes.NewReader(in), &sdk, &out); err == nil {
			t.Fatal("frameStdio returned nil at the end of its input")
		}
		passed := strings.SplitAfter(sdk.String(), "\n")
		for _, l := range passed[:len(passed)-1] {
			msg := strings.TrimSuffix(l, "\n")
			if strings.ContainsAny(msg, "\r\n") || checkMessage([]byte(msg)) != nil {
				t.Fatalf("the SDK was given %q", l)
			}
		}
		if passed[len(passed)-1] != "" {
			t.Fatalf("the SDK was given an unterminated %q", passed[len(passed)-1])
		}
		answered := strings.Count(out.String(), "\n")
		lines := bytes.Count(in, []byte("\n"))
		if len(in) > 0 && in[len(in)-1] != '\n' {
			lines++
		}
		if got := len(passed) - 1 + answered; got != lines {
			t.Fatalf("%d lines in, %d given to the SDK and %d answered", lines, len(passed)-1, answered)
		}
	})
}

// BenchmarkCheckMessage is the cost of the strict reading of a typical
// tools/call, which every message now pays before the SDK reads it.
func BenchmarkCheckMessage(b *testing.B) {
	msg := []byte(`{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"fs.read_text_file","arguments":{"path":"/srv/sandbox/notes.txt","head":20},"_meta":{"progressToken":"p-17","io.rulelock/instruction":"summarise the notes"}}}`)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if r := checkMessage(msg); r != nil {
			b.Fatal(r.msg)
		}
	}
}
