package ca

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/custos-pki/custos/internal/testutil"
)

// newStackIn is newStack with the store's data directory known.
func newStackIn(t testing.TB, dir string) *stack {
	t.Helper()
	return newStackOn(t, testutil.SingleNodeIn(t, dir))
}

// stateSize takes a snapshot and returns its size: the state file up to
// its high-water mark, free pages included (a snapshot is the file as is).
func stateSize(t testing.TB, s *stack, dir string) int64 {
	t.Helper()
	must(t, s.store.Snapshot())
	var newest os.FileInfo
	_ = filepath.Walk(filepath.Join(dir, "snapshots"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == "state.bin" && (newest == nil || fi.ModTime().After(newest.ModTime())) {
			newest = fi
		}
		return nil
	})
	if newest == nil {
		t.Fatal("no snapshot")
	}
	return newest.Size()
}

// reuseRounds issues n one-hour certificates, lets them expire past the
// retention and tidies them away, rounds times, and returns the state
// file's size after each round's issuance.
func reuseRounds(t testing.TB, n, rounds int) []int64 {
	dir := t.TempDir()
	s := newStackIn(t, dir)
	c := s.newCA(t, s.newCAArgs())
	_, err := c.Init(bg, InitOptions{})
	must(t, err)
	_, err = c.WriteRole(bg, webRole())
	must(t, err)
	var sizes []int64
	for r := range rounds {
		for i := range n {
			x := issueTTL(t, c, "h.example.com", time.Hour)
			if i%10 == 0 { // some revoked, so that tidy waits for a CRL that drops them
				_, err := c.Revoke(bg, x.Serial, 1)
				must(t, err)
			}
		}
		sizes = append(sizes, stateSize(t, s, dir))
		s.clock.Add(24 * time.Hour)
		must(t, c.Maintain(bg)) // a CRL made after they expired
		st, err := c.Tidy(bg, time.Hour)
		must(t, err)
		if st.Removed != n || st.Kept != 0 || countCerts(t, c) != 0 {
			t.Fatalf("round %d: tidy %+v, %d certificates left", r, st, countCerts(t, c))
		}
	}
	return sizes
}

// TestTidyStateFileReused: the pages that Tidy frees are used again, so
// the state file does not grow by another round's worth of certificates
// when a round of issuance, expiry and tidy repeats.
func TestTidyStateFileReused(t *testing.T) {
	const n = 300
	sizes := reuseRounds(t, n, 3)
	first := sizes[0]
	for r, sz := range sizes[1:] {
		if grew := sz - first; grew > first/4 {
			t.Errorf("round %d: state file %d B, %d B over the first round's %d B: freed pages not reused", r+2, sz, grew, first)
		}
	}
	t.Logf("state file after each round of %d certificates: %v B", n, sizes)
}

// BenchmarkTidyReuse reports the state file's bytes per certificate after
// a first round of b.N certificates, and what two more rounds of issue,
// expire and tidy added.
func BenchmarkTidyReuse(b *testing.B) {
	sizes := reuseRounds(b, b.N, 3)
	b.ReportMetric(float64(sizes[0])/float64(b.N), "round1-B/cert")
	b.ReportMetric(float64(sizes[1]-sizes[0])/float64(b.N), "round2-growth-B/cert")
	b.ReportMetric(float64(sizes[2]-sizes[1])/float64(b.N), "round3-growth-B/cert")
}
