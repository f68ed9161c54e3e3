package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// A Witness cosigns checkpoints: the client side of C2SP tlog-witness's
// add-checkpoint. AddCheckpoint submits the signed checkpoint note with a
// consistency proof from oldSize (the size the witness last cosigned, 0 if
// none) and returns the witness's signature lines ("— name base64\n"...).
//
// It reports the witness's refusals as the errors the protocol defines: a
// *WitnessConflictError for 409 Conflict (the old size is not the one the
// witness cosigned last), ErrWitnessInconsistent for 422 (the proof does
// not verify against the tree the witness cosigned: a fork), and any other
// error for the rest (403 and 404 are misconfigurations, timeouts are
// transient). Package audit does no networking: internal/witness has the
// HTTP client.
type Witness interface {
	AddCheckpoint(ctx context.Context, oldSize int64, proof tlog.TreeProof, checkpoint []byte) ([]byte, error)
}

// WitnessFunc adapts a function to a Witness.
type WitnessFunc func(ctx context.Context, oldSize int64, proof tlog.TreeProof, checkpoint []byte) ([]byte, error)

// AddCheckpoint calls f.
func (f WitnessFunc) AddCheckpoint(ctx context.Context, oldSize int64, proof tlog.TreeProof, checkpoint []byte) ([]byte, error) {
	return f(ctx, oldSize, proof, checkpoint)
}

// WitnessConflictError is a witness's 409 Conflict: it last cosigned a tree
// of Size, not the old size the log sent.
type WitnessConflictError struct {
	Size int64
}

func (e *WitnessConflictError) Error() string {
	return fmt.Sprintf("witness last cosigned a tree of size %d", e.Size)
}

// ErrWitnessInconsistent is a witness's 422: the checkpoint is not
// consistent with the tree it cosigned last.
var ErrWitnessInconsistent = errors.New("checkpoint is not consistent with the tree the witness cosigned")

// ErrWitnessConflict is the error, sticky until restart, of a Checkpointer
// whose witness has seen a larger or a different tree: the log was rolled
// back or forked, and no checkpoint is published any more.
var ErrWitnessConflict = errors.New("witness conflict")

// CheckpointWitness is one witness a Checkpointer sends its checkpoints to.
type CheckpointWitness struct {
	Key     note.Verifier // the witness's cosignature key (ParseCosignerKey)
	Witness Witness
}

// defaultWitnessTimeout bounds one round of add-checkpoint requests.
const defaultWitnessTimeout = 10 * time.Second

// witnessState is what a Checkpointer knows of its witnesses: the size each
// cosigned last (0 if unknown), and whether one saw another tree.
type witnessState struct {
	sizes    map[string]int64
	conflict error
}

// initWitnesses reads the sizes the witnesses cosigned from the last
// published checkpoint: its cosignatures are the persistent record.
func (c *Checkpointer) initWitnesses() {
	c.wit.sizes = map[string]int64{}
	for _, w := range c.opts.Witnesses {
		if c.last.Seq == 0 {
			continue
		}
		if _, err := note.Open(c.last.Note, note.VerifierList(w.Key)); err == nil {
			c.wit.sizes[w.Key.Name()] = c.last.Size
		}
	}
}

// WitnessConflict returns the conflict that stopped publication (an
// ErrWitnessConflict), or nil.
func (c *Checkpointer) WitnessConflict() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wit.conflict
}

// cosign sends the signed checkpoint to every witness at once and returns
// it with the cosignatures appended, once the quorum cosigned. A witness
// that has seen a larger or a different tree stops publication for good.
func (c *Checkpointer) cosign(cp Checkpoint, msg []byte) ([]byte, error) {
	timeout := c.opts.WitnessTimeout
	if timeout == 0 {
		timeout = defaultWitnessTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ws := c.opts.Witnesses
	sigs := make([][]byte, len(ws))
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		old := c.wit.sizes[w.Key.Name()]
		wg.Go(func() { sigs[i], errs[i] = c.cosignOne(ctx, w, old, cp, msg) })
	}
	wg.Wait()
	var out bytes.Buffer
	out.Write(msg)
	n := 0
	var failed []error
	for i, w := range ws {
		if errors.Is(errs[i], ErrWitnessConflict) {
			c.mu.Lock()
			c.wit.conflict = errs[i]
			c.mu.Unlock()
			if c.opts.OnWitnessConflict != nil {
				c.opts.OnWitnessConflict(errs[i])
			}
			return nil, errs[i]
		}
		if errs[i] != nil {
			failed = append(failed, errs[i])
			continue
		}
		c.wit.sizes[w.Key.Name()] = cp.Size
		out.Write(sigs[i])
		n++
	}
	quorum := c.opts.WitnessQuorum
	if quorum == 0 {
		quorum = len(ws)
	}
	if n < quorum {
		return nil, fmt.Errorf("%d of %d witnesses cosigned checkpoint %d, %d required: %w", n, len(ws), cp.Size, quorum, errors.Join(failed...))
	}
	return out.Bytes(), nil
}

// cosignOne gets one witness's cosignature. When the witness last cosigned
// another size than old, it says so (409) and is asked once more from that
// size, if it is not beyond this tree.
func (c *Checkpointer) cosignOne(ctx context.Context, w CheckpointWitness, old int64, cp Checkpoint, msg []byte) ([]byte, error) {
	name := w.Key.Name()
	for retried := false; ; retried = true {
		if old > cp.Size {
			return nil, fmt.Errorf("%w: witness %s cosigned a tree of size %d, this log has %d entries: the log was rolled back", ErrWitnessConflict, name, old, cp.Size)
		}
		var proof tlog.TreeProof
		if old > 0 && old < cp.Size {
			p, err := tlog.ProveTree(cp.Size, old, c.log.hashes)
			if err != nil {
				return nil, fmt.Errorf("witness %s: consistency proof from %d: %w", name, old, err)
			}
			proof = p
		}
		sigs, err := w.Witness.AddCheckpoint(ctx, old, proof, msg)
		var ce *WitnessConflictError
		switch {
		case errors.As(err, &ce) && !retried && ce.Size != old && ce.Size <= cp.Size:
			old = ce.Size
			continue
		case errors.As(err, &ce) && ce.Size > cp.Size:
			return nil, fmt.Errorf("%w: witness %s cosigned a tree of size %d, this log has %d entries: the log was rolled back or forked", ErrWitnessConflict, name, ce.Size, cp.Size)
		case errors.Is(err, ErrWitnessInconsistent):
			return nil, fmt.Errorf("%w: witness %s cosigned a different tree of size %d: the log forked: %v", ErrWitnessConflict, name, old, err)
		case err != nil:
			return nil, fmt.Errorf("witness %s: %w", name, err)
		}
		return cosignatureLines(w.Key, msg, sigs)
	}
}

// cosignatureLines checks a witness's reply and returns its valid
// signature lines for the checkpoint, ignoring other keys' (as
// tlog-witness says).
func cosignatureLines(key note.Verifier, msg, reply []byte) ([]byte, error) {
	if len(reply) == 0 || !bytes.HasSuffix(reply, []byte("\n")) || len(reply) > 64<<10 {
		return nil, fmt.Errorf("witness %s: malformed reply", key.Name())
	}
	n, err := note.Open(append(bytes.Clone(msg), reply...), note.VerifierList(key))
	if err != nil {
		return nil, fmt.Errorf("witness %s: no valid cosignature in its reply: %w", key.Name(), err)
	}
	var b bytes.Buffer
	for _, s := range n.Sigs {
		fmt.Fprintf(&b, "— %s %s\n", s.Name, s.Base64)
	}
	return b.Bytes(), nil
}
