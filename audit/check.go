package audit

import (
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/tlog"
)

// CheckReport is what CheckDir found in a log directory.
type CheckReport struct {
	Segments   []SegmentReport
	Entries    int64 // entries read intact
	Checkpoint *CheckpointReport
	// Torn is an incomplete last frame: the prefix of an unacknowledged
	// write that a crash (or, on a live log, the writer) left; Open zeroes
	// it. Not damage.
	Torn *TornTail
	// Damage is what Open would refuse the log for, or nil.
	Damage *CorruptError
}

// SegmentReport describes one segment file.
type SegmentReport struct {
	Name    string // relative to the log directory
	First   int64  // index of its first entry
	Entries int64  // entries read intact from it
	Size    int64  // file size
	End     int64  // offset where its frames end
}

// CheckpointReport is the last checkpoint the log issued (its signature
// is not checked: that is VerifyDir's job).
type CheckpointReport struct {
	Seq  int64
	Size int64
	Root tlog.Hash
}

// CheckDir reads the log in dir as Open would recover it, without locking
// it or changing anything, and reports its segments, entries, last
// checkpoint, a torn tail and any damage. It works on a log a running
// gateway holds: damage is reported only when two reads agree, so that a
// frame being written is not taken for it. The error is for what kept it
// from reading the log (a missing directory, an I/O error), not damage.
func CheckDir(dir string) (*CheckReport, error) {
	var prev *CheckReport
	for range 5 {
		rep, err := checkOnce(dir)
		if err != nil || rep.Damage == nil {
			return rep, err
		}
		if prev != nil && *prev.Damage == *rep.Damage {
			return rep, nil
		}
		prev = rep
	}
	return prev, nil
}

func checkOnce(dir string) (*CheckReport, error) {
	if _, err := os.Stat(filepath.Join(dir, segDir)); err != nil {
		return nil, err
	}
	open := func(name string) (file, error) {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		return osFile{f}, nil
	}
	sc, err := scanLog(dir, open)
	defer sc.close()
	var ce *CorruptError
	if err != nil && !errors.As(err, &ce) {
		return nil, err
	}
	rep := sc.report() // with damage, what was read before it
	rep.Damage = ce
	return rep, nil
}

// report summarises a scan.
func (sc *logScan) report() *CheckReport {
	rep := &CheckReport{Entries: sc.size, Torn: sc.torn}
	for i, s := range sc.segs {
		n := sc.size - s.first
		if i+1 < len(sc.segs) {
			n = sc.segs[i+1].first - s.first
		}
		rep.Segments = append(rep.Segments, SegmentReport{Name: filepath.Join(segDir, segName(s.first)), First: s.first, Entries: n, Size: s.size, End: s.end})
	}
	if sc.cp.Seq > 0 {
		rep.Checkpoint = &CheckpointReport{Seq: sc.cp.Seq, Size: sc.cp.Size, Root: sc.cp.Root}
	}
	return rep
}
