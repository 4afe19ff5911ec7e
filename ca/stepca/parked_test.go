package stepca

import (
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// flakyRecord is a prepared record whose first fail commits fail.
type flakyRecord struct {
	fail    int32
	commits atomic.Int32 // attempts
	written atomic.Int32 // successful ones
}

func (r *flakyRecord) Writes() []raftstore.Op { return nil }

func (r *flakyRecord) Commit(context.Context) error {
	if r.commits.Add(1) <= r.fail {
		return errors.New("storage unavailable")
	}
	r.written.Add(1)
	return nil
}

type flakyPreparer struct {
	mu   sync.Mutex
	recs []*flakyRecord
	fail int32
}

func (p *flakyPreparer) PrepareRecord(context.Context, *x509.Certificate, string, string) (PreparedRecord, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := &flakyRecord{fail: p.fail}
	p.recs = append(p.recs, r)
	return r, nil
}

// park parks the record of a certificate whose commits fail fail times,
// to be written alone a millisecond later if nothing claims it.
func park(t *testing.T, fail int32) (*parkedRecords, *flakyRecord, *big.Int) {
	t.Helper()
	prep := &flakyPreparer{fail: fail}
	s := newParkedRecords(prep, time.Second)
	s.claimWithin = time.Millisecond
	serial := big.NewInt(41)
	if err := s.prepare(&x509.Certificate{SerialNumber: serial}, SourceACME, "acme"); err != nil {
		t.Fatal(err)
	}
	return s, prep.recs[0], serial
}

// TestParkedRecordRetries: a record no finalisation claims is written
// alone, tried again while the storage fails; one that cannot be written
// in parkedTries tries fails its finalisation if it comes, so that an
// unrecorded certificate is never handed out.
func TestParkedRecordRetries(t *testing.T) {
	waitFor := func(t *testing.T, what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s", what)
			}
		}
	}
	ctx := context.Background()

	t.Run("written on a later try", func(t *testing.T) {
		s, rec, serial := park(t, parkedTries-1)
		waitFor(t, "the record is written", func() bool { return rec.written.Load() == 1 })
		if n := rec.commits.Load(); n != parkedTries {
			t.Errorf("%d tries, want %d", n, parkedTries)
		}
		// Written: the finalisation finds nothing left to write.
		if got, err := s.claim(ctx, serial); got != nil || err != nil {
			t.Errorf("claim after the write alone = %v, %v", got, err)
		}
	})

	t.Run("given up on", func(t *testing.T) {
		s, rec, serial := park(t, 1<<20)
		waitFor(t, "every try is made", func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			e := s.m[certID(serial)]
			return e != nil && e.failed
		})
		if n := rec.commits.Load(); n != parkedTries {
			t.Errorf("%d tries, want %d", n, parkedTries)
		}
		got, err := s.claim(ctx, serial)
		if got != nil || err == nil || !strings.Contains(err.Error(), "could not be recorded") {
			t.Fatalf("claim of a record that could not be written = %v, %v; want an error", got, err)
		}
	})
}
