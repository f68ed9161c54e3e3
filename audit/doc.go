// Package audit is rulelock's tamper-evident audit log: durable
// write-ahead entries, an RFC 6962 Merkle tree over them, signed C2SP
// tlog-checkpoint notes, inclusion receipts, and the offline verifier that
// third parties run. It imports nothing network-facing and nothing of the
// policy engine.
//
// # Entries
//
// An Entry (a decision, approval, outcome, policy activation or note) is
// encoded canonically as a JSON object with sorted keys, no insignificant
// white space and "v":1; DecodeEntry accepts only that encoding. Long fields
// are stored by SHA-256 digest in the log's blob store.
//
// # Sensitive values
//
// A sensitive value (a member of an action the policy marks sensitive, or a
// whole field) is never written in plaintext: the log holds a Commitment,
// HMAC-SHA-256(salt, value) and the value sealed with AES-256-GCM under a
// key derived from the salt (HKDF-SHA-256), with a fresh 32-byte salt per
// value. The salts go to their own file, salts.jsonl (mode 0600), synced
// before the entry; whoever holds it can open a value (Log.Reveal,
// RevealDir), and deleting it crypto-shreds the values while the log still
// verifies. Inside an action a commitment replaces the member's value as
// {"$commitment":{"hmac":"<hex>","sealed":"<base64>"}}, so that the entry's
// action_sha256 covers the commitments and a verifier checks it as any
// other.
//
// # Durability
//
// Log.Append returns only after the entry is on stable storage. One writer
// goroutine takes everything queued, writes it to a preallocated segment
// file as frames (length, CRC-32C, index, hash chain, entry), issues one
// fdatasync and hands the batch to an acker goroutine, which acknowledges it
// while the writer writes and syncs the next. Open zeroes a torn last frame
// (the unacknowledged prefix of a write a crash cut short), keeps a copy and
// reports it (Log.TornTail); any other damage refuses the log with a
// *CorruptError naming the entry, segment and offset, and CheckDir reports
// the same without changing anything. After a disk error the log refuses
// appends until reopened.
//
// # Checkpoints, tiles and receipts
//
// Entries are the leaves of an RFC 6962 SHA-256 tree (golang.org/x/mod/sumdb/tlog).
// A Checkpointer signs C2SP tlog-checkpoint notes with a note.Signer whose
// key name is the log's origin, keeps every checkpoint it issued, and can
// keep a C2SP tlog-tiles directory up to date. A receipt is a C2SP
// tlog-proof whose extra data is the entry: VerifyReceipt checks it alone.
//
// # Key custody
//
// A log has one signing key at a time. NewCheckpointer accepts only the key
// that signed the latest checkpoint (ErrWrongKey otherwise); RotateKey
// changes it with a key rotation entry that a checkpoint of the old key
// covers, and VerifyDir follows that chain from any key of it that signed a
// checkpoint.
//
// # Witnesses and equivocation
//
// With CheckpointOptions.Witnesses, a checkpoint is published only once a
// quorum of witnesses (C2SP tlog-witness, through the small Witness
// interface; internal/witness has the HTTP client) cosigned it: their
// Ed25519 cosignature/v1 lines (C2SP tlog-cosignature) are appended to the
// note. A witness that has cosigned a larger or a different tree stops
// publication for good (ErrWitnessConflict). A WitnessPolicy (C2SP
// tlog-policy) says which cosignatures a verifier requires; two signed
// checkpoints that do not fit are an Equivocation, and the two notes are
// the proof (VerifyError.Notes, CompareCheckpoints).
//
// # Example
//
//	l, err := audit.Open(dir, audit.Options{})
//	...
//	r, err := l.Append(ctx, &audit.Entry{Kind: audit.KindDecision, Time: now, ...})
//	// r.Index and r.LeafHash go into the reply.
//	cp, err := audit.NewCheckpointer(l, signer, audit.CheckpointOptions{TilesDir: tiles})
//	go cp.Run(ctx, time.Second)
//	...
//	rep, err := audit.VerifyDir(dir, verifier, audit.VerifyOptions{Since: saved})
//	// err is a *VerifyError with the class and position of the first failure.
package audit
