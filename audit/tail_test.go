package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func appendNotesN(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := l.Append(context.Background(), &Entry{Kind: KindNote, Time: time.Now(), Message: fmt.Sprintf("note %d %s", l.Size(), bytes.Repeat([]byte("x"), (i*37)%3000))}); err != nil {
			t.Fatal(err)
		}
	}
}

// A tail holds exactly the entries from its position on, as the whole
// snapshot does, across segments, and follows a log that grows.
func TestOpenTail(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{SegmentSize: frameHeader + MaxEntrySize + 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendNotesN(t, l, 300)
	full, err := OpenSnapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	if len(full.l.segs) < 3 {
		t.Fatalf("%d segments: the test wants several", len(full.l.segs))
	}
	want, err := full.ReadEntries(0, 300)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []int64{0, 1, 57, 150, 298, 299} {
		pos, err := full.Position(k)
		if err != nil {
			t.Fatal(err)
		}
		tail, err := OpenTail(dir, pos)
		if err != nil {
			t.Fatalf("tail from %+v: %v", pos, err)
		}
		got, err := tail.ReadEntries(k, 300)
		if err != nil || tail.Size() != 300 {
			t.Fatalf("tail from %d: size %d, %v", k, tail.Size(), err)
		}
		for i := range got {
			if !bytes.Equal(got[i], want[k+int64(i)]) {
				t.Fatalf("tail from %d: entry %d differs", k, k+int64(i))
			}
		}
		if k > 0 {
			if _, err := tail.ReadEntry(k - 1); err == nil {
				t.Errorf("tail from %d read entry %d", k, k-1)
			}
		}
		if p2, err := tail.Position(k + 1); k < 299 && (err != nil || p2 != mustPos(t, full, k+1)) {
			t.Errorf("tail position of %d: %+v, %v", k+1, p2, err)
		}
		tail.Close()
	}

	// The log grows: a tail from the last entry sees the new ones.
	last, _ := full.Position(299)
	appendNotesN(t, l, 40)
	tail, err := OpenTail(dir, last)
	if err != nil {
		t.Fatal(err)
	}
	defer tail.Close()
	if tail.Size() != 340 {
		t.Fatalf("tail size %d, want 340", tail.Size())
	}
	e, err := l.ReadEntry(339)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tail.ReadEntry(339); err != nil || !bytes.Equal(got, e) {
		t.Errorf("entry 339 from the tail: %v", err)
	}
}

func mustPos(t *testing.T, s *Snapshot, i int64) Position {
	p, err := s.Position(i)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenTailRefuses(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{SegmentSize: frameHeader + MaxEntrySize + 4096})
	if err != nil {
		t.Fatal(err)
	}
	appendNotesN(t, l, 200)
	pos, err := l.Position(150)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := l.Position(1)
	p2, _ := l.Position(2)
	l.Close()
	for _, bad := range []Position{
		{Index: 151, Segment: pos.Segment, Offset: pos.Offset}, // another entry's place
		{Index: 150, Segment: pos.Segment, Offset: pos.Offset + 1},
		{Index: 150, Segment: pos.Segment + 1, Offset: pos.Offset},
	} {
		if _, err := OpenTail(dir, bad); !errors.Is(err, ErrPosition) {
			t.Errorf("OpenTail(%+v): %v, want ErrPosition", bad, err)
		}
	}
	// Damage after the position, in a segment that is not the last, is
	// damage, not the end.
	if p1.Segment != 0 || p2.Segment != 0 || pos.Segment == 0 {
		t.Fatalf("entries 1 and 2 in segment %d and %d, 150 in %d: want 0, 0 and a later one", p1.Segment, p2.Segment, pos.Segment)
	}
	f, err := os.OpenFile(filepath.Join(dir, segDir, segName(0)), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("garbage"), p2.Offset+60); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := OpenTail(dir, p1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("OpenTail over damage: %v, want ErrCorrupt", err)
	}
}

func TestReadAt(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{SegmentSize: frameHeader + MaxEntrySize + 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendNotesN(t, l, 120)
	for _, i := range []int64{0, 1, 64, 119} {
		pos, err := l.Position(i)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := l.ReadEntry(i)
		if got, err := ReadAt(dir, pos); err != nil || !bytes.Equal(got, want) {
			t.Errorf("ReadAt(%+v): %v", pos, err)
		}
		pos.Index++
		if _, err := ReadAt(dir, pos); !errors.Is(err, ErrPosition) {
			t.Errorf("ReadAt of another index: %v, want ErrPosition", err)
		}
	}
}
