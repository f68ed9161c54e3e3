package httpapi

import (
	"net/http"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/search"
)

// AuditLog serves an audit log, its checkpointer and its tiles directory.
type AuditLog struct {
	Log          *audit.Log
	Checkpointer *audit.Checkpointer
	TilesDir     string
	Index        *search.Index // the log search (GET /v1/log/find); nil: none
	MaxScan      int64         // entries a search scans past the index before 503 (default 100,000)
}

// Size returns the number of entries in the log.
func (a *AuditLog) Size() int64 { return a.Log.Size() }

// Checkpoint returns the latest signed checkpoint.
func (a *AuditLog) Checkpoint() []byte { return a.Checkpointer.Latest() }

// Entry returns entry i as encoded in the log.
func (a *AuditLog) Entry(i int64) ([]byte, error) { return a.Log.ReadEntry(i) }

// ConsistencyProof proves that the tree of the first m entries is a
// prefix of the tree of the first n (the console checks checkpoints with it).
func (a *AuditLog) ConsistencyProof(m, n int64) (tlog.TreeProof, error) {
	return a.Log.ConsistencyProof(m, n)
}

// Blob returns the content of a field the log holds by digest.
func (a *AuditLog) Blob(d audit.Digest) ([]byte, error) { return a.Log.Blob(d) }

// Receipt returns a self-contained receipt for entry i.
func (a *AuditLog) Receipt(i int64) ([]byte, error) { return a.Checkpointer.Receipt(i) }

// Tiles serves the C2SP tlog-tiles directory.
func (a *AuditLog) Tiles() http.Handler {
	if a.TilesDir == "" {
		return http.NotFoundHandler()
	}
	return http.FileServer(http.Dir(a.TilesDir))
}

// CheckpointReporter is what /readyz and /metrics read of checkpoint
// signing, when the LogAPI has it (AuditLog does).
type CheckpointReporter interface {
	CheckpointStatus() audit.CheckpointStatus
	Unsigned() time.Duration // the age of the oldest unsigned entry
}

// CheckpointStatus returns what the checkpointer's Run has done.
func (a *AuditLog) CheckpointStatus() audit.CheckpointStatus { return a.Checkpointer.Status() }

// Unsigned returns how long the oldest entry without a signed checkpoint
// has waited.
func (a *AuditLog) Unsigned() time.Duration { return a.Checkpointer.Unsigned() }
