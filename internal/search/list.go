package search

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"sort"
	"time"
)

// list is an ascending list of entry indexes below an end.
type list interface {
	// seek returns the first element at or after x, or the end.
	seek(x int64) (int64, error)
}

// allList holds every index below end.
type allList struct{ end int64 }

func (l allList) seek(x int64) (int64, error) { return min(x, l.end), nil }

// sliceList is a list in memory.
type sliceList struct {
	s   []int64
	end int64
}

func (l sliceList) seek(x int64) (int64, error) {
	i := sort.Search(len(l.s), func(i int) bool { return l.s[i] >= x })
	if i == len(l.s) {
		return l.end, nil
	}
	return l.s[i], nil
}

// postings is a posting file: ascending uint64 indexes, read a page at a
// time, with binary search over the file to skip ahead.
type postings struct {
	f    *os.File
	n    int64 // records below end
	end  int64
	page []int64 // records [at, at+len(page))
	at   int64
	buf  []byte
}

const pageRecords = 512

func newPostings(f *os.File, end int64) (*postings, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	p := &postings{f: f, end: end, buf: make([]byte, pageRecords*8)}
	// Records at or past end are an interrupted update's: not counted.
	n := st.Size() / 8
	i, err := p.search(0, n, end)
	if err != nil {
		return nil, err
	}
	p.n = i
	return p, nil
}

func (p *postings) record(i int64) (int64, error) {
	var b [8]byte
	if _, err := p.f.ReadAt(b[:], i*8); err != nil {
		return 0, err
	}
	return int64(binary.LittleEndian.Uint64(b[:])), nil
}

// search returns the first record position in [lo, hi) whose value is at
// least x, or hi.
func (p *postings) search(lo, hi, x int64) (int64, error) {
	for lo < hi {
		mid := lo + (hi-lo)/2
		v, err := p.record(mid)
		if err != nil {
			return 0, err
		}
		if v < x {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, nil
}

func (p *postings) load(at int64) error {
	k := min(pageRecords, p.n-at)
	if _, err := p.f.ReadAt(p.buf[:k*8], at*8); err != nil {
		return err
	}
	p.page = p.page[:0]
	for i := int64(0); i < k; i++ {
		p.page = append(p.page, int64(binary.LittleEndian.Uint64(p.buf[i*8:])))
	}
	p.at = at
	return nil
}

func (p *postings) seek(x int64) (int64, error) {
	for {
		if len(p.page) > 0 && p.page[len(p.page)-1] >= x && p.page[0] <= x {
			i := sort.Search(len(p.page), func(i int) bool { return p.page[i] >= x })
			return p.page[i], nil
		}
		next := p.at + int64(len(p.page))
		if len(p.page) > 0 && p.page[0] > x {
			return p.page[0], nil // x lies before the page: the answer is its first
		}
		if next >= p.n {
			return p.end, nil
		}
		// The next page, if x is in it (a dense walk); else a binary search.
		if err := p.load(next); err != nil {
			return 0, err
		}
		if p.page[len(p.page)-1] >= x {
			continue
		}
		i, err := p.search(p.at+int64(len(p.page)), p.n, x)
		if err != nil {
			return 0, err
		}
		if i >= p.n {
			return p.end, nil
		}
		if err := p.load(i); err != nil {
			return 0, err
		}
	}
}

// timeList holds the indexes of the entries whose time is in [since,
// until] (until inclusive: clamping to int64 nanoseconds may merge
// times, and Match makes the bound exact).
type timeList struct {
	f            *os.File
	sums         []int64 // least, greatest time of each complete block below end
	since, until int64
	end          int64
	blk          int64   // the block in times
	times        []int64 // its times
	buf          []byte
}

func newTimeList(f *os.File, blocksPath string, since, until time.Time, end int64) (*timeList, error) {
	b, err := os.ReadFile(blocksPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l := &timeList{f: f, end: end, since: math.MinInt64, until: math.MaxInt64, blk: -1, buf: make([]byte, blockSize*8)}
	if !since.IsZero() {
		l.since = nanos(since)
	}
	if !until.IsZero() {
		l.until = nanos(until)
	}
	complete := min(int64(len(b)/16), end/blockSize)
	for i := int64(0); i < complete; i++ {
		l.sums = append(l.sums, int64(binary.LittleEndian.Uint64(b[i*16:])), int64(binary.LittleEndian.Uint64(b[i*16+8:])))
	}
	return l, nil
}

func (l *timeList) seek(x int64) (int64, error) {
	for x < l.end {
		b := x / blockSize
		if b < int64(len(l.sums)/2) {
			least, greatest := l.sums[2*b], l.sums[2*b+1]
			switch {
			case greatest < l.since || least > l.until:
				x = (b + 1) * blockSize // no entry of the block is in range
				continue
			case least >= l.since && greatest <= l.until:
				return x, nil // every entry of the block is
			}
		}
		if l.blk != b {
			first := b * blockSize
			k := min(blockSize, l.end-first)
			if _, err := l.f.ReadAt(l.buf[:k*8], first*8); err != nil {
				return 0, err
			}
			l.times = l.times[:0]
			for i := int64(0); i < k; i++ {
				l.times = append(l.times, int64(binary.LittleEndian.Uint64(l.buf[i*8:])))
			}
			l.blk = b
		}
		for i := x - b*blockSize; i < int64(len(l.times)); i++ {
			if t := l.times[i]; t >= l.since && t <= l.until {
				return b*blockSize + i, nil
			}
		}
		x = (b + 1) * blockSize
	}
	return l.end, nil
}
