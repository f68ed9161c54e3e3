package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// frameAt is where one entry's frame lies.
type frameAt struct {
	path  string // segment file
	name  string // relative to the log directory
	off   int64
	len   int64 // whole frame
	index int64
	chain tlog.Hash
}

// logFrames lists the frames of every segment of the log in dir.
func logFrames(t *testing.T, dir string) []frameAt {
	t.Helper()
	firsts, err := listSegments(filepath.Join(dir, segDir))
	if err != nil {
		t.Fatal(err)
	}
	var out []frameAt
	for _, first := range firsts {
		name := filepath.Join(segDir, segName(first))
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); ; {
			fr, err := readFrame(memReader(data), off, int64(len(data)))
			if err == errEnd {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			n := frameHeader + int64(len(fr.payload))
			out = append(out, frameAt{path: filepath.Join(dir, name), name: name, off: off, len: n, index: fr.index, chain: fr.chain})
			off += n
		}
	}
	return out
}

// recoveryLog writes n acknowledged entries in segments of the smallest
// size (116 entries each), signing a checkpoint after the first cp
// (none if 0), and closes the log.
func recoveryLog(t *testing.T, n, cp int) (dir string, acked []Receipt, v note.Verifier) {
	t.Helper()
	dir = t.TempDir()
	l := openTest(t, dir, Options{SegmentSize: frameHeader + MaxEntrySize})
	s, v := testKey(t, testOrigin)
	for i := range n {
		r, err := l.Append(context.Background(), testEntry(i))
		if err != nil {
			t.Fatal(err)
		}
		acked = append(acked, r)
		if i+1 == cp {
			c, err := NewCheckpointer(l, s, CheckpointOptions{})
			if err == nil {
				_, err = c.Checkpoint()
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, acked, v
}

func patch(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	patch(t, path, off, []byte{data[off] ^ 0x04})
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// digestDir hashes every file under dir, to show that nothing changed.
func digestDir(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == lockFile {
			return err
		}
		b, err := os.ReadFile(path)
		fmt.Fprintf(h, "%s %d\n", path, len(b))
		h.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// tornFrameBytes is the frame entry n would have had after the last one.
func tornFrameBytes(t *testing.T, fs []frameAt, index int64) []byte {
	t.Helper()
	e := testEntry(int(index))
	e.ActionSHA256 = sha256.Sum256([]byte(e.Action.Text))
	p, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	last := fs[len(fs)-1]
	return appendFrame(nil, index, nextChain(last.chain, tlog.RecordHash(p)), p)
}

// TestRecoverRefusesCorruption damages acknowledged data on disk in every
// way a crash cannot: Open must refuse the log with the first entry it
// cannot read intact (and the segment), change nothing on disk, and
// CheckDir must report the same damage. Today's main took several of these
// for a torn tail and zeroed acknowledged entries.
func TestRecoverRefusesCorruption(t *testing.T) {
	const n, cp = 300, 180 // three segments: 0-115, 116-231, 232-299
	type damage func(t *testing.T, dir string, fs []frameAt)
	for _, tc := range []struct {
		name   string
		damage damage
		index  int64 // the entry Open must name
		seg    int64 // the entry whose segment it must name (-1: none)
	}{
		{"flipped byte in an acknowledged entry after the last checkpoint", func(t *testing.T, dir string, fs []frameAt) {
			flip(t, fs[260].path, fs[260].off+frameHeader+20)
		}, 260, 260},
		{"flipped byte in the last acknowledged entry", func(t *testing.T, dir string, fs []frameAt) {
			flip(t, fs[n-1].path, fs[n-1].off+frameHeader+20)
		}, n - 1, n - 1},
		{"flipped byte in the last entry's final byte", func(t *testing.T, dir string, fs []frameAt) {
			flip(t, fs[n-1].path, fs[n-1].off+fs[n-1].len-1)
		}, n - 1, n - 1},
		{"last byte of the last entry zeroed (looks torn; the stored hashes vouch for it)", func(t *testing.T, dir string, fs []frameAt) {
			patch(t, fs[n-1].path, fs[n-1].off+fs[n-1].len-1, []byte{0})
		}, n - 1, n - 1},
		{"length field of the last entry enlarged (stored hashes lost too)", func(t *testing.T, dir string, fs []frameAt) {
			os.Remove(filepath.Join(dir, hashesFile))
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], uint32(fs[n-1].len-frameHeader+100))
			patch(t, fs[n-1].path, fs[n-1].off, b[:])
		}, n - 1, n - 1},
		{"flipped byte before the last checkpoint", func(t *testing.T, dir string, fs []frameAt) {
			flip(t, fs[150].path, fs[150].off+frameHeader+20)
		}, 150, 150},
		{"flipped CRC", func(t *testing.T, dir string, fs []frameAt) {
			flip(t, fs[270].path, fs[270].off+5)
		}, 270, 270},
		{"implausible length", func(t *testing.T, dir string, fs []frameAt) {
			patch(t, fs[270].path, fs[270].off, []byte{0xff, 0xff, 0xff, 0xff})
		}, 270, 270},
		{"plausible length, CRC fails, data follows", func(t *testing.T, dir string, fs []frameAt) {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], uint32(fs[270].len-frameHeader-7))
			patch(t, fs[270].path, fs[270].off, b[:])
		}, 270, 270},
		{"frame of the wrong index with a valid CRC", func(t *testing.T, dir string, fs []frameAt) {
			data, _ := os.ReadFile(fs[280].path)
			fr := data[fs[280].off : fs[280].off+fs[280].len]
			p := append([]byte(nil), fr[frameHeader:]...)
			var chain tlog.Hash
			copy(chain[:], fr[16:48])
			patch(t, fs[280].path, fs[280].off, appendFrame(nil, 281, chain, p))
		}, 280, 280},
		{"hash chain broken with a valid CRC", func(t *testing.T, dir string, fs []frameAt) {
			data, _ := os.ReadFile(fs[280].path)
			p := append([]byte(nil), data[fs[280].off+frameHeader:fs[280].off+fs[280].len]...)
			patch(t, fs[280].path, fs[280].off, appendFrame(nil, 280, tlog.Hash{1}, p))
		}, 280, 280},
		{"acknowledged frame zeroed, valid frames after it", func(t *testing.T, dir string, fs []frameAt) {
			patch(t, fs[260].path, fs[260].off, make([]byte, fs[260].len))
		}, 260, 260},
		{"zeros then data after the last frame", func(t *testing.T, dir string, fs []frameAt) {
			last := fs[n-1]
			patch(t, last.path, last.off+last.len+1000, []byte("stray"))
		}, n, n - 1},
		{"bad frame in an earlier segment", func(t *testing.T, dir string, fs []frameAt) {
			flip(t, fs[115].path, fs[115].off+frameHeader+3)
		}, 115, 115},
		{"earlier segment ends torn, a later segment exists", func(t *testing.T, dir string, fs []frameAt) {
			f := fs[115]
			patch(t, f.path, f.off+f.len/2, make([]byte, f.len-f.len/2))
		}, 115, 115},
		{"segment missing in the middle", func(t *testing.T, dir string, fs []frameAt) {
			os.Remove(fs[116].path)
		}, 116, 232},
		{"last segment missing (the stored hashes vouch for it)", func(t *testing.T, dir string, fs []frameAt) {
			os.Remove(fs[232].path)
		}, 232, 116},
		{"segment renamed out of sequence", func(t *testing.T, dir string, fs []frameAt) {
			os.Rename(fs[232].path, filepath.Join(dir, segDir, segName(233)))
		}, 232, -1},
		{"earlier segment truncated inside a frame", func(t *testing.T, dir string, fs []frameAt) {
			truncate(t, fs[100].path, fs[100].off+30)
		}, 100, 100},
		{"earlier segment truncated at a frame boundary", func(t *testing.T, dir string, fs []frameAt) {
			truncate(t, fs[100].path, fs[100].off)
		}, 100, 116},
		{"last segment truncated inside the last frame", func(t *testing.T, dir string, fs []frameAt) {
			truncate(t, fs[n-1].path, fs[n-1].off+fs[n-1].len-10)
		}, n - 1, n - 1},
		{"last segment truncated at a frame boundary (the stored hashes vouch for the rest)", func(t *testing.T, dir string, fs []frameAt) {
			truncate(t, fs[290].path, fs[290].off)
		}, 290, 290},
		{"last frames cut below the last checkpoint", func(t *testing.T, dir string, fs []frameAt) {
			os.Remove(filepath.Join(dir, hashesFile))
			os.Remove(fs[232].path)
			os.Remove(fs[116].path)
		}, 116, 0},
		{"torn frame of the wrong index", func(t *testing.T, dir string, fs []frameAt) {
			last := fs[n-1]
			fr := tornFrameBytes(t, fs, n+3)
			patch(t, last.path, last.off+last.len, fr[:frameHeader+30])
		}, n, n - 1},
		{"torn frame with a gap of zeros inside", func(t *testing.T, dir string, fs []frameAt) {
			last := fs[n-1]
			fr := tornFrameBytes(t, fs, n)
			fr = fr[:len(fr)-5]
			clear(fr[frameHeader+20 : frameHeader+60])
			patch(t, last.path, last.off+last.len, fr)
		}, n, n - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _, _ := recoveryLog(t, n, cp)
			fs := logFrames(t, dir)
			if len(fs) != n || fs[115].path == fs[116].path || fs[231].path == fs[232].path {
				t.Fatalf("log layout: %d frames, segments not as the cases expect", len(fs))
			}
			tc.damage(t, dir, fs)
			before := digestDir(t, dir)
			l, err := Open(dir, Options{})
			if err == nil {
				l.Close()
				t.Fatalf("Open accepted the damaged log (%d entries)", l.Size())
			}
			var ce *CorruptError
			if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) {
				t.Fatalf("Open: got %v, want a *CorruptError", err)
			}
			if ce.Index != tc.index {
				t.Errorf("Open: %v; got entry %d, want %d", err, ce.Index, tc.index)
			}
			if tc.seg >= 0 && ce.Segment != fs[tc.seg].name {
				t.Errorf("Open: %v; got segment %q, want %q", err, ce.Segment, fs[tc.seg].name)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("entry %d", tc.index)) {
				t.Errorf("Open: %q does not name entry %d", err, tc.index)
			}
			if after := digestDir(t, dir); after != before {
				t.Errorf("Open changed the damaged log")
			}
			rep, err := CheckDir(dir)
			if err != nil {
				t.Fatalf("CheckDir: %v", err)
			}
			if rep.Damage == nil || *rep.Damage != *ce {
				t.Errorf("CheckDir damage %+v, want %+v", rep.Damage, ce)
			}
			if after := digestDir(t, dir); after != before {
				t.Errorf("CheckDir changed the log")
			}
		})
	}
}

// TestRecoverTornTail cuts the write of one more frame short, as a crash
// does: Open zeroes exactly its bytes, keeps a copy, reports it, and every
// acknowledged entry is there; the log then appends and verifies.
func TestRecoverTornTail(t *testing.T) {
	const n, cp = 150, 100 // two segments
	for _, cut := range []int{3, 7, frameHeader - 1, frameHeader, frameHeader + 40, -1} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			dir, acked, v := recoveryLog(t, n, cp)
			fs := logFrames(t, dir)
			last := fs[n-1]
			fr := tornFrameBytes(t, fs, n)
			if cut < 0 {
				cut = len(fr) - 1 // all but the last byte
			}
			patch(t, last.path, last.off+last.len, fr[:cut])
			rep, err := CheckDir(dir)
			if err != nil || rep.Damage != nil || rep.Torn == nil || rep.Entries != n {
				t.Fatalf("CheckDir: %+v, %v; want %d entries and a torn tail", rep, err, n)
			}
			l := openTest(t, dir, Options{})
			tt, ok := l.TornTail()
			want := TornTail{Segment: last.name, Offset: last.off + last.len, Bytes: int64(cut), Index: n,
				Saved: filepath.Join(tornDir, fmt.Sprintf("%s.%d", filepath.Base(last.name), last.off+last.len))}
			if !ok || tt != want {
				t.Fatalf("TornTail() = %+v, %v; want %+v", tt, ok, want)
			}
			if saved, err := os.ReadFile(filepath.Join(dir, tt.Saved)); err != nil || !bytes.Equal(saved, fr[:cut]) {
				t.Fatalf("saved torn bytes %x, %v; want %x", saved, err, fr[:cut])
			}
			for _, r := range acked {
				b, err := l.ReadEntry(r.Index)
				if err != nil || tlog.RecordHash(b) != r.LeafHash {
					t.Fatalf("acknowledged entry %d lost: %v", r.Index, err)
				}
			}
			if _, err := l.Append(context.Background(), testEntry(1000)); err != nil {
				t.Fatal(err)
			}
			l.Close()
			l = openTest(t, dir, Options{})
			if tt, ok := l.TornTail(); ok {
				t.Errorf("torn tail reported again: %+v", tt)
			}
			if got := l.Size(); got != n+1 {
				t.Errorf("size %d, want %d", got, n+1)
			}
			l.Close()
			if _, err := VerifyDir(dir, v, VerifyOptions{}); err != nil {
				t.Errorf("verify after repair: %v", err)
			}
		})
	}
}

// TestRecoverFlippedByteAfterCheckpoint is the regression of issue 14: one
// flipped byte in an acknowledged entry written after the last checkpoint
// was taken for a torn write, and it and every later entry were zeroed;
// Open succeeded and verify passed. Open must refuse the log instead.
func TestRecoverFlippedByteAfterCheckpoint(t *testing.T) {
	dir := t.TempDir()
	s, _ := testKey(t, testOrigin)
	l := openTest(t, dir, Options{})
	for i := range 6 {
		if _, err := l.Append(context.Background(), testEntry(i)); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			c, err := NewCheckpointer(l, s, CheckpointOptions{})
			if err == nil {
				_, err = c.Checkpoint()
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	l.Close()
	path, data, frames := segFrames(t, dir)
	data[frames[2].off+frameHeader+30] ^= 0x01
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, Options{})
	if err == nil {
		n := l.Size()
		l.Close()
		t.Fatalf("Open accepted a flipped byte in acknowledged entry 2 and kept %d of 6 entries", n)
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "entry 2") {
		t.Fatalf("Open: got %v, want ErrCorrupt naming entry 2", err)
	}
}
