package export_test

import (
	"encoding/json"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/internal/export"
)

// A receiver's side: decode a line, check its leaf hash against the entry's
// bytes (then, for a proof that the entry is in the signed log, fetch
// GET /v1/log/proof/{index}), and keep it unless its index is one it has.
func ExampleLine_Check() {
	entry := []byte(`{"kind":"note","message":"hello","time":"2026-12-02T23:07:23.410158521Z","v":1}`)
	line := export.AppendLine(nil, 0, tlog.RecordHash(entry), entry) // what the exporter sends
	fmt.Print(string(line))

	var l export.Line
	if err := json.Unmarshal(line, &l); err != nil {
		panic(err)
	}
	fmt.Println(l.Index, l.Check())

	l.Entry = []byte(`{"kind":"note","message":"hullo","time":"2026-12-02T23:07:23.410158521Z","v":1}`)
	fmt.Println(l.Check())
	// Output:
	// {"index":0,"leaf_hash":"CCpdjrhQfUeAukepMjAjx+1/KGVVX/sWYlpGVHrjMf4=","entry":{"kind":"note","message":"hello","time":"2026-12-02T23:07:23.410158521Z","v":1}}
	// 0 <nil>
	// entry 0: leaf_hash does not match the entry
}
