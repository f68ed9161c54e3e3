package pglog

import (
	"testing"

	"github.com/rulelock/rulelock/audit"
)

// FuzzParseTilePath: a path Handler accepts names exactly one tile, and
// is that tile's audit.TilePath (no second spelling of a tile).
func FuzzParseTilePath(f *testing.F) {
	for _, p := range []string{"tile/0/000", "tile/1/x001/234.p/5", "tile/entries/000.p/44", "tile/0/001.p/256", "checkpoint", "tile/8/0/000", "tile/data/000"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		tile, err := parseTilePath(p)
		if err != nil {
			return
		}
		if got := audit.TilePath(tile); got != p {
			t.Fatalf("parseTilePath(%q) = %+v, whose path is %q", p, tile, got)
		}
		if tile.H != tileHeight || tile.W < 1 || tile.W > 1<<tileHeight || tile.L < -1 {
			t.Fatalf("parseTilePath(%q) = %+v: not a tile of this log", p, tile)
		}
	})
}
