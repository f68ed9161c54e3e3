package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"golang.org/x/mod/sumdb/tlog"
)

// A segment file is a sequence of frames followed by zeros (segments are
// preallocated). A frame is
//
//	uint32 payload length (big-endian, 1..MaxEntrySize)
//	uint32 CRC-32C of everything after it up to the end of the payload
//	uint64 index of the entry in the log
//	[32]   chain: SHA-256(previous chain || RFC 6962 leaf hash of the payload)
//	payload: the canonical entry encoding
//
// The chain of the entry before index 0 is 32 zero bytes.
const frameHeader = 4 + 4 + 8 + 32

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendFrame appends the frame of payload to buf.
func appendFrame(buf []byte, index int64, chain tlog.Hash, payload []byte) []byte {
	start := len(buf)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(payload)))
	buf = binary.BigEndian.AppendUint32(buf, 0)
	buf = binary.BigEndian.AppendUint64(buf, uint64(index))
	buf = append(buf, chain[:]...)
	buf = append(buf, payload...)
	crc := crc32.Checksum(buf[start+8:], castagnoli)
	binary.BigEndian.PutUint32(buf[start+4:], crc)
	return buf
}

// nextChain returns the chain value after an entry with leaf hash h.
func nextChain(prev, h tlog.Hash) tlog.Hash {
	var b [2 * tlog.HashSize]byte
	copy(b[:], prev[:])
	copy(b[tlog.HashSize:], h[:])
	return sha256.Sum256(b[:])
}

// frame is one decoded frame.
type frame struct {
	off     int64 // offset of the frame in its segment
	index   int64
	chain   tlog.Hash
	payload []byte
}

// errEnd marks the end of the frames of a segment (a zero header).
var errEnd = errors.New("end of segment")

// badFrameError reports a frame that cannot be read: torn, corrupted.
type badFrameError struct {
	off    int64
	reason string
}

func (e *badFrameError) Error() string {
	return fmt.Sprintf("bad frame at offset %d: %s", e.off, e.reason)
}

// viewer is a reader that can lend the bytes at [off, off+n) without a
// copy; readFrame's payload then points into them. ok is false when it
// cannot.
type viewer interface {
	view(off, n int64) (b []byte, ok bool)
}

// memReader reads from bytes that are not reused: readFrame returns
// payloads that point into them instead of copies.
type memReader []byte

func (m memReader) view(off, n int64) ([]byte, bool) {
	if off < 0 || off+n > int64(len(m)) {
		return nil, false
	}
	return m[off : off+n], true
}

func (m memReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(m)) {
		return 0, fmt.Errorf("read at %d: out of range", off)
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readFrame reads the frame at off of a segment of the given size. It
// returns errEnd at a zero header (or the end of the file) and a
// *badFrameError for a frame that is truncated or fails its CRC.
func readFrame(r io.ReaderAt, off, size int64) (frame, error) {
	if off+frameHeader > size {
		// Too little room for a frame: the end, if it is preallocated zeros.
		rest := make([]byte, size-off)
		if _, err := r.ReadAt(rest, off); err != nil {
			return frame{}, fmt.Errorf("read frame at %d: %w", off, err)
		}
		if bytes.Count(rest, []byte{0}) == len(rest) {
			return frame{}, errEnd
		}
		return frame{}, &badFrameError{off, "truncated header"}
	}
	var h [frameHeader]byte
	if _, err := r.ReadAt(h[:], off); err != nil {
		return frame{}, fmt.Errorf("read frame at %d: %w", off, err)
	}
	n := int64(binary.BigEndian.Uint32(h[0:]))
	if n == 0 {
		if h == [frameHeader]byte{} {
			return frame{}, errEnd
		}
		return frame{}, &badFrameError{off, "zero length"}
	}
	if n > MaxEntrySize {
		return frame{}, &badFrameError{off, fmt.Sprintf("length %d over limit", n)}
	}
	if off+frameHeader+n > size {
		return frame{}, &badFrameError{off, "truncated payload"}
	}
	var buf []byte
	if v, ok := r.(viewer); ok {
		buf, _ = v.view(off, frameHeader+n)
	}
	if buf == nil {
		buf = make([]byte, frameHeader+n)
		copy(buf, h[:])
		if _, err := r.ReadAt(buf[frameHeader:], off+frameHeader); err != nil {
			return frame{}, fmt.Errorf("read frame at %d: %w", off, err)
		}
	}
	if crc32.Checksum(buf[8:], castagnoli) != binary.BigEndian.Uint32(h[4:]) {
		return frame{}, &badFrameError{off, "checksum mismatch"}
	}
	f := frame{off: off, index: int64(binary.BigEndian.Uint64(h[8:])), payload: buf[frameHeader:]}
	copy(f.chain[:], h[16:])
	if f.index < 0 {
		return frame{}, &badFrameError{off, "negative index"}
	}
	return f, nil
}
